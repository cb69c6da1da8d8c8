"""What tests share: the API client and firms (api), GraphQL documents (crm_ops, staff_ops),
LOGIN helpers (login), real services (services, databases, imap, smtp, server, browser,
websocket), mail builders (mail) and SQL statement counting (sqlcount)."""
