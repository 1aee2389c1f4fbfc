"""Reading SQL: the sqlglot dialect and its recovery rewrites, the lexer, statement events, SQL
files and their parse cache, and the server as parser of last resort.

Empty on purpose: ``mvgraph.sql.sqlfiles`` must load without sqlglot (a warm parse cache needs
no parser), so nothing here imports a module of the package.
"""
