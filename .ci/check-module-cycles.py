#!/usr/bin/env python3
"""Fails when the files of a crate import each other in a cycle.

Every module should sit above what it imports. For each folder given
(default: every crate's `src/` and the test suites made of several
modules), this builds the graph file -> files
it imports (`use crate::`, `crate::` paths, `super::`), following `pub use`
re-exports to the file that defines the item, prints the graph between
top-level modules and lists any cycle between files.

    python3 .ci/check-module-cycles.py [CRATE/src ...]
"""
import os, re, sys


def check(root):
  files = {}
  for d, _, fs in os.walk(root):
      for f in fs:
          if f.endswith('.rs'):
              p = os.path.relpath(os.path.join(d, f), root)
              files[p] = open(os.path.join(d, f)).read()
  def modpath(p):
      p = p[:-3]
      parts = p.split('/')
      if parts[-1] in ('mod', 'lib', 'main'): parts = parts[:-1]
      return parts
  mods = {tuple(modpath(p)): p for p in files}
  # definitions: name -> file
  defs = {}
  for p, s in files.items():
      for m in re.finditer(r'^\s*pub(?:\([a-z]+\))?\s+(?:async\s+)?(?:struct|enum|trait|fn|const|type|static|mod)\s+(\w+)', s, re.M):
          defs.setdefault((tuple(modpath(p)), m.group(1)), p)
  def resolve(path):
      """path: list of segments from crate root -> defining file"""
      # longest module prefix
      for k in range(len(path), 0, -1):
          if tuple(path[:k]) in mods:
              mod = tuple(path[:k]); rest = path[k:]
              if rest and (mod, rest[0]) in defs:
                  return defs[(mod, rest[0])]
              if rest:
                  # a re-export: find `pub use ...::name` in mod's file
                  s = files[mods[mod]]
                  name = rest[0]
                  for m in re.finditer(r'pub(?:\(crate\))?\s+use\s+([\w:]+)::\{([^}]*)\}|pub(?:\(crate\))?\s+use\s+([\w:]+)::(\w+)\s*;', s, re.S):
                      if m.group(1):
                          names = [n.strip() for n in m.group(2).split(',')]
                          base = m.group(1)
                      else:
                          names = [m.group(4)]; base = m.group(3)
                      if name in names:
                          segs = base.split('::')
                          if segs[0] == 'crate': segs = segs[1:]
                          elif segs[0] == 'self': segs = list(mod) + segs[1:]
                          elif segs[0] == 'super': segs = list(mod[:-1]) + segs[1:]
                          else: segs = list(mod) + segs
                          r = resolve(segs + [name])
                          if r: return r
              return mods[mod]
      return None
  def expand(tree):
      """'a::{b, c::{d, self}}' -> [['a','b'], ['a','c','d'], ['a','c']]"""
      tree = tree.strip()
      depth = 0; parts = []; cur = ''
      i = tree.find('{')
      if i < 0:
          return [[x for x in tree.split('::') if x and x != 'self']] if tree else []
      prefix = [x for x in tree[:i].split('::') if x]
      inner = tree[i+1:tree.rindex('}')]
      for ch in inner:
          if ch == '{': depth += 1
          if ch == '}': depth -= 1
          if ch == ',' and depth == 0:
              parts.append(cur); cur = ''
          else: cur += ch
      parts.append(cur)
      out = []
      for part in parts:
          part = part.strip()
          if not part: continue
          if part == 'self': out.append(prefix); continue
          for sub in expand(part): out.append(prefix + sub)
      return out
  edges = {p: set() for p in files}
  for p, s in files.items():
      me = modpath(p)
      code = re.sub(r'//.*', '', s)
      paths = []
      for m in re.finditer(r'\buse\s+((?:crate|super|self)\b[^;]*);', code, re.S):
          paths += expand(re.sub(r'\s+as\s+\w+', '', m.group(1)))
      rest = re.sub(r'\buse\s+[^;]*;', '', code)
      paths += [m.group(0).split('::') for m in re.finditer(r'\b(?:crate|super)(?:::\w+)+', rest)]
      for path in paths:
          head, tail = path[0], path[1:]
          if head == 'crate': target = tail
          elif head == 'super': target = me[:-1] + tail
          elif head == 'self': target = me + tail
          else: continue
          r = resolve(target)
          if r and r != p:
              edges[p].add(r)
  # Tarjan SCC
  idx = {}; low = {}; stack = []; on = set(); sccs = []; n = [0]
  def strong(v):
      idx[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
      for w in edges[v]:
          if w not in idx: strong(w); low[v] = min(low[v], low[w])
          elif w in on: low[v] = min(low[v], idx[w])
      if low[v] == idx[v]:
          c = []
          while True:
              w = stack.pop(); on.discard(w); c.append(w)
              if w == v: break
          sccs.append(c)
  sys.setrecursionlimit(10000)
  for v in files:
      if v not in idx: strong(v)
  cycles = [c for c in sccs if len(c) > 1]
  # top-level module graph
  top = lambda p: modpath(p)[0] if modpath(p) else 'lib'
  tedges = {}
  for p, ws in edges.items():
      for w in ws:
          if top(p) != top(w): tedges.setdefault(top(p), set()).add(top(w))
  print(f"{root}:")
  for k in sorted(tedges): print(f"  {k:12} -> {', '.join(sorted(tedges[k]))}")
  for c in cycles: print(f"  import cycle between files: {', '.join(sorted(c))}")
  # The same between top-level modules: `a` imports `b` and `b` imports `a`,
  # directly or through others.
  module_cycles = []
  for start in tedges:
    seen, todo = set(), list(tedges[start])
    while todo:
      m = todo.pop()
      if m == start:
        module_cycles.append(start)
        break
      if m not in seen:
        seen.add(m)
        todo.extend(tedges.get(m, ()))
  if module_cycles:
    print(f"  import cycle between modules: {', '.join(sorted(module_cycles))}")
  return not cycles and not module_cycles


if __name__ == "__main__":
    roots = sys.argv[1:] or [
        "bus-core/src", "bus-rabbitmq/src", "marketplace/src", "benchmark/src",
        "marketplace/tests/api", "marketplace/tests/faults",
    ]
    results = [check(r) for r in roots]
    if not all(results):
        sys.exit("import cycles found")
