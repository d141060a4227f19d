"""mail-access: Dovecot serves IMAP and POP3 from local-delivery's maildirs; this package is
its login bridge (Dovecot's passdb and userdb, answered from relay-auth and the directory)
and the renderer of its config (deploy/dovecot/)."""
