"""Who may do what: privilege levels (``grant`` / ``revoke``), and how a job gets exactly its
submitter's rights (``logins``). The rules themselves live in the database
(``0015_security.sql``): PostgreSQL enforces them."""
