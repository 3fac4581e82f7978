"""The ``search`` tool: ``{"query": str, "k": int (optional)}`` over a pluggable ``SearchBackend``.

A backend has one method, ``search(query, k) -> list[Hit]`` (``Hit`` is a ``(title, snippet, url)``
named tuple). Built in:

  LocalIndex      BM25 (``lm.tools.bm25``) over local documents: ``LocalIndex.from_world(world)`` (the
                  world's encyclopedia pages, ``lab://world/<name>``; the default of ``get('search')``),
                  ``LocalIndex.from_directory(path)`` (``*.txt``: one document each, titled by the file
                  name; ``*.jsonl``: one ``{"text", "title"?, "url"?}`` per line), or ``LocalIndex(docs)``.
  SearxngBackend  a real web search through a SearXNG instance's JSON API (``/search?q=...&format=json``).
                  It makes network calls, so nothing here builds it by default and the tests only feed
                  it canned responses.

Configuring a web backend: pass one to the tool, ``get('search', backend=SearxngBackend('https://searx.example'))``,
or register a factory by name, ``backends['mine'] = MyBackend`` and ``get('search', backend='mine', **kwargs)``.
Any object with ``search(query, k)`` returning ``(title, snippet, url)`` tuples works; an exception
it raises becomes an ``ok=False`` result.
"""

import json
import os
import re
import urllib.parse
import urllib.request
from typing import Callable, NamedTuple, Protocol

from lm.lab.bm25 import BM25Index, terms
from lm.lab.knowledge import world_passages
from lm.lab.world import World
from lm.tools.base import Tool, ToolResult


class Hit(NamedTuple):
  title: str
  snippet: str
  url: str


class SearchBackend(Protocol):
  def search(self, query: str, k: int) -> list[Hit]:
    ...


def snippet(text: str, query: str, title: str = '', max_chars: int = 240) -> str:
  """The sentence of ``text`` holding the most distinct query terms that are not in ``title``, then the most
  query terms (the first on ties), cut to ``max_chars``."""
  wanted = set(terms(query))
  new = wanted - set(terms(title))
  sentences = [s for s in re.split(r'(?<=[.!?])\s+', text.strip()) if s] or ['']
  best = max(sentences, key=lambda s: (len(new & set(terms(s))), len(wanted & set(terms(s)))))
  return best if len(best) <= max_chars else best[:max_chars - 3].rstrip() + '...'


class LocalIndex:
  """BM25 over ``docs``: ``(title, text, url)`` triples."""

  def __init__(self, docs: list[tuple[str, str, str]]):
    self.docs = [tuple(d) for d in docs]
    self.index = BM25Index([f'{title}\n{text}' for title, text, _ in self.docs])

  def search(self, query: str, k: int) -> list[Hit]:
    hits = []
    for i, _ in self.index.top(query, k):
      title, text, url = self.docs[i]
      hits.append(Hit(title, snippet(text, query, title), url))
    return hits

  @classmethod
  def from_world(cls, world: World, include_held_out: bool = True) -> 'LocalIndex':
    return cls([(title, text, 'lab://world/' + title.lower().replace(' ', '_'))
                for title, text in world_passages(world, include_held_out)])

  @classmethod
  def from_directory(cls, path: str) -> 'LocalIndex':
    """Every ``*.txt`` and ``*.jsonl`` file under ``path``, in sorted order."""
    if not os.path.isdir(path):
      raise ValueError(f'search index: {path} is not a directory')
    docs = []
    for folder, _, files in sorted(os.walk(path)):
      for name in sorted(files):
        file = os.path.join(folder, name)
        if name.endswith('.txt'):
          with open(file, encoding='utf-8') as f:
            docs.append((os.path.splitext(name)[0], f.read(), 'file://' + os.path.abspath(file)))
        elif name.endswith('.jsonl'):
          docs += _jsonl_docs(file)
    if not docs:
      raise ValueError(f'search index: no .txt or .jsonl documents under {path}')
    return cls(docs)


def _jsonl_docs(file: str) -> list[tuple[str, str, str]]:
  docs = []
  with open(file, encoding='utf-8') as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'search index: {file} line {n} is not JSON: {e}') from None
      if not isinstance(record, dict) or not isinstance(record.get('text'), str):
        raise ValueError(f'search index: {file} line {n} has no "text" string')
      url = record.get('url') or f'file://{os.path.abspath(file)}#{n}'
      docs.append((str(record.get('title') or f'{os.path.basename(file)}:{n}'), record['text'], str(url)))
  return docs


class SearxngBackend:
  """Web search through a SearXNG instance (``base_url``, e.g. ``https://searx.example``) that allows JSON output.

  ``fetch(url) -> bytes`` does the HTTP GET (default: ``urllib`` with ``timeout_s``); replace it to add
  headers, a proxy or, in tests, canned responses.
  """

  def __init__(self, base_url: str, timeout_s: float = 10.0, fetch: Callable[[str], bytes] | None = None):
    if not base_url.startswith(('http://', 'https://')):
      raise ValueError(f'searxng backend: base_url must start with http:// or https://, got {base_url!r}')
    self.base_url, self.timeout_s = base_url.rstrip('/'), timeout_s
    self.fetch = fetch or self._get

  def _get(self, url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
      return response.read()

  def url(self, query: str) -> str:
    return f'{self.base_url}/search?' + urllib.parse.urlencode({'q': query, 'format': 'json'})

  def search(self, query: str, k: int) -> list[Hit]:
    results = json.loads(self.fetch(self.url(query))).get('results', [])
    return [Hit(str(r.get('title', '')), str(r.get('content', '')), str(r.get('url', ''))) for r in results[:k]]


backends: dict[str, Callable[..., SearchBackend]] = {'local': LocalIndex.from_directory, 'world': LocalIndex.from_world,
                                                      'searxng': SearxngBackend}


class Search(Tool):
  name = 'search'
  description = 'Searches documents; returns titles, snippets and addresses of the best matches.'
  parameters = {'query': (str, True), 'k': (int, False)}

  def __init__(self, backend: SearchBackend | str | None = None, k: int = 3, max_k: int = 10,
               max_chars: int = 2000, **backend_kwargs):
    super().__init__(max_chars=max_chars)
    if isinstance(backend, str):
      if backend not in backends:
        raise ValueError(f'search: unknown backend {backend!r}; known: {", ".join(sorted(backends))}')
      backend = backends[backend](**backend_kwargs)
    elif backend_kwargs:
      raise ValueError(f'search: options {sorted(backend_kwargs)} need a backend name')
    self.backend = backend if backend is not None else LocalIndex.from_world(World.from_config({}))
    self.k, self.max_k = k, max_k

  def run(self, arguments: dict) -> ToolResult:
    k = arguments.get('k', self.k)
    if not 1 <= k <= self.max_k:
      return ToolResult(f'search: k must be between 1 and {self.max_k}, got {k}', False)
    hits = self.backend.search(arguments['query'], k)
    if not hits:
      return ToolResult('no results', True)
    return ToolResult('\n'.join(f'[{i + 1}] {h.title} ({h.url})\n{h.snippet}' for i, h in enumerate(hits)), True)
