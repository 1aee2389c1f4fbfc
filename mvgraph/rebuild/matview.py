"""``REBUILD MATERIALIZED VIEW v AS query``: the new definition and every dependent are made
and populated under temporary names (indexes, grants, comments, owners copied), then one short
transaction swaps them in. A dependent that no longer fits the new columns fails the job
before the swap, naming it and PostgreSQL's error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mvgraph.rebuild.book import VIEW_STEPS
from mvgraph.rebuild.closure import read_closure, temp_name
from mvgraph.rebuild.control import RebuildFailed
from mvgraph.rebuild.relations import Relations, exists, hold, resolve

if TYPE_CHECKING:
    from mvgraph.rebuild.control import Steps


class ViewRebuild:
    """The steps of a materialized view's rebuild."""

    STEPS = VIEW_STEPS

    def __init__(self, runner: Steps) -> None:
        self.r = runner
        self.conn = runner.conn
        self.book = runner.book
        self.stmt = runner.stmt
        self.job = runner.job
        self.rels: Relations | None = None

    def run(self) -> None:
        self.r.check()
        oid, schema, name = resolve(self.conn, self.stmt, "materialized view")
        closure = read_closure(self.conn, oid)
        if closure.problems:
                    raise RebuildFailed(closure.problems[0])
        hold(self.r, closure)
        state: dict[str, Any] = dict(self.book.steps["prepare"].state)
        self.rels = Relations(self.r, closure, state)
        tmp = (schema, temp_name(name, self.job))
        if not self.book.done("prepare"):
            self.book.running("prepare")
            state.update({"oid": oid, "schema": schema, "name": name, "tmp": tmp[1]})
            self.rels.plan_view(tmp, _query(self.stmt.query or ""))
            state["fingerprint"] = self.rels.fingerprint()
            self.book.progress("prepare", 1, 1, state=state)
            self.book.finished("prepare", message=f"{len(closure.dependents)} dependent(s)")
        if not self.book.done("create_tmp_table"):
            self.r.check()
            self.book.running("create_tmp_table")
            if not exists(self.conn, *tmp):  # else made by an attempt lost before its record
                with self.conn.transaction():
                    self.rels.run(state["before"] + state["after"])
                    self.rels.made("relation", tmp)
            self.rels.dependents(self.r.check, "create_tmp_table", populate=False)
            self.book.finished("create_tmp_table", message=f"{tmp[0]}.{tmp[1]} and "
                               f"{len(state['dependents'])} dependent(s) made")
        if not self.book.done("insert"):
            self.r.check()
            self.book.running("insert")
            first = {"schema": schema, "name": name, "tmp": tmp[1], "kind": "m"}
            self.rels.dependents(self.r.check, "insert", make=False, first=first)
            self.book.finished("insert", message="populated")
        if not self.book.done("swap"):
            self.r.check()
            with self.conn.transaction():
                self.book.running("swap")
                self.rels.swap(tmp, self.stmt.params.keep_source, is_table=False)
                self.book.finished("swap", conn=self.conn, message=self.rels.swap_message)
        if not self.book.done("cleanup"):
            self.book.running("cleanup")
            self.book.finished("cleanup", message="nothing left to do")


def _query(text: str) -> str:
    """The new query without a trailing semicolon or WITH [NO] DATA (the view is made WITH NO
    DATA and populated in the insert step)."""
    from mvgraph.sql.lexer import Kind, lex

    words = [x for x in lex(text) if x.kind not in (Kind.COMMENT,)]
    while words and words[-1].kind is Kind.SEMICOLON:
        words.pop()
    low = [text[x.start:x.end].lower() for x in words]
    if low[-2:] == ["with", "data"]:
        words = words[:-2]
    elif low[-3:] == ["with", "no", "data"]:
        words = words[:-3]
    return text[:words[-1].end] if words else text
