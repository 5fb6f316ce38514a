"""A search box's text as a PostgreSQL tsquery, built so no input can be a syntax error.

What users may type (as in web search engines):
    words          every word must match; each also matches as a prefix ("invo" finds "invoices")
    "a phrase"     the words next to each other, in order, exactly
    -word -"a b"   must not match (a -word excludes what the word would find; only
                   together with at least one positive term)
    a OR b         either (upper-case OR; binds tighter than the implicit AND)
Words are case- and accent-folded like the indexed text. Every word goes into the query
as a quoted lexeme (quotes and backslashes escaped), so PostgreSQL's parser splits and
normalizes it exactly as it did the indexed text, and an empty lexeme is never emitted."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from storage.search import clean, fold

MAX_TERM_CHARS = 500  # and so at most 2000 bytes: below tsquery's 2047-byte word limit
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


@dataclass
class ParsedTerm:
    tsquery: str                     # '' when nothing positive is left to search for
    rank_tsquery: str = ""           # without the negations, which only filter
    highlight_queries: list[str] = field(default_factory=list)  # one per positive word


def _lexeme(word: str, prefix: bool) -> str:
    escaped = word.replace("\\", "\\\\").replace("'", "''")
    return f"'{escaped}'" + (":*" if prefix else "")


def _words(text: str) -> list[str]:
    # Folding can turn a character into spaces (or nothing): split afterwards.
    return fold(text).split()


def parse_search_term(term: str) -> ParsedTerm:
    groups: list[list[str]] = []     # OR-groups of positive terms, ANDed together
    negations: list[str] = []
    highlights: list[str] = []
    join_next = False
    for m in _TOKEN.finditer(clean(term)):
        negate, phrase, bare = m.group(1) == "-", m.group(2), m.group(3)
        if bare == "OR":
            join_next = bool(groups)
            continue
        if bare is not None and bare.startswith("-"):
            negate, bare = True, bare[1:]
        if phrase is not None:
            words = _words(phrase)
            if not words:
                continue
            query = "(" + " <-> ".join(_lexeme(w, False) for w in words) + ")" if len(words) > 1 \
                else _lexeme(words[0], False)
            word_queries = [_lexeme(w, False) for w in words]
        else:
            words = _words(bare or "")
            if not words:
                continue
            # One bare token is one word to the user, even if folding split it.
            query = " <-> ".join(_lexeme(w, True) for w in words)
            query = f"({query})" if len(words) > 1 else query
            word_queries = [_lexeme(w, True) for w in words]
        if negate:
            negations.append(f"!{query}")
            join_next = False
            continue
        highlights.extend(word_queries)
        if join_next:
            groups[-1].append(query)
        else:
            groups.append([query])
        join_next = False
    if not groups:
        return ParsedTerm("")
    clauses = [g[0] if len(g) == 1 else "(" + " | ".join(g) + ")" for g in groups]
    return ParsedTerm(" & ".join(clauses + negations), " & ".join(clauses), list(dict.fromkeys(highlights)))


MAX_HIGHLIGHT_WORDS = 5000
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def words_in(texts: list[str]) -> list[str]:
    """The distinct words of result texts, as written, without surrounding punctuation:
    the candidates for `highlights`."""
    seen: dict[str, None] = {}
    for text in texts:
        for chunk in text.split():
            word = _EDGES.sub("", chunk)
            if word and word not in seen:
                seen[word] = None
                if len(seen) >= MAX_HIGHLIGHT_WORDS:
                    return list(seen)
    return list(seen)
