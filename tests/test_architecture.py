"""The library's import graph: no cycle, and no arrow from the measuring side into training.

Why: a cycle is what forced lazy imports and a method factory that trained models; an arrow
from evaluation/, latent/ or generative/ into training/'s method modules ties what measures
a model to how one is trained. The graph is read from the source (every `import` and
`from ... import` of every module, at any depth, so an import inside a function cannot hide
a cycle), not from what happens to be loaded.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "latmix_tf"
MEASURING = ("latmix_tf.evaluation", "latmix_tf.latent", "latmix_tf.generative")


def _modules():
  """{module name: path} of every module of the package."""
  found = {}
  for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
    for name in files:
      if name.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
        found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = \
            os.path.join(folder, name)
  return found


def _resolve(name, modules):
  """The longest module of the package that `name` (a module or a module.attribute) names."""
  while name and name not in modules:
    name = name.rpartition(".")[0]
  return name or None


def import_graph():
  """{module: set of package modules it imports} (imports at any depth of the file)."""
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = package.split(".")
          base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
        # `from pkg import module` imports that module; `from pkg import name`, pkg itself.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                 for a in node.names]
      else:
        continue
      for name in names:
        target = _resolve(name, modules) if name.startswith(PACKAGE) else None
        if target and target != module:
          targets.add(target)
    graph[module] = targets
  return graph


def _cycle(graph):
  """One import cycle as a list of modules, or None (iterative DFS)."""
  state, stack_of = {}, []
  for start in sorted(graph):
    if start in state:
      continue
    stack = [(start, iter(sorted(graph[start])))]
    state[start] = "open"
    stack_of.append(start)
    while stack:
      node, children = stack[-1]
      child = next(children, None)
      if child is None:
        state[node] = "done"
        stack.pop()
        stack_of.pop()
      elif state.get(child) == "open":
        return stack_of[stack_of.index(child):] + [child]
      elif child not in state:
        state[child] = "open"
        stack_of.append(child)
        stack.append((child, iter(sorted(graph[child]))))
  return None


def test_the_import_graph_has_no_cycle():
  graph = import_graph()
  assert len(graph) > 50 and "latmix_tf.training.registry" in graph
  # A package imports its own modules from __init__; the modules must not import it back.
  assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def _folder(module):
  """The package folder of `module` (latmix_tf.latent.bank -> latmix_tf.latent); a top-level
  module is its own node."""
  return ".".join(module.split(".")[:2])


def test_the_folders_import_each_other_without_a_cycle():
  """Between folders (stages of the method, sides of the library) the arrows run one way:
  training -> latent -> generative, never back."""
  folders = {}
  for module, targets in import_graph().items():
    folders.setdefault(_folder(module), set()).update(
        _folder(t) for t in targets if _folder(t) != _folder(module))
  assert _cycle(folders) is None, " -> ".join(_cycle(folders))


def test_the_cycle_finder_finds_a_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_nothing_that_measures_imports_training():
  graph = import_graph()
  arrows = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith(MEASURING)
                  for t in targets if t.startswith("latmix_tf.training"))
  assert not arrows, arrows
