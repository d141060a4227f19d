"""`mailyard import qmail`: one module per source format (assign, vpasswd, dotqmail,
controlfiles, tcprules), parsing kept apart from applying (plan builds and checks
everything, apply writes through the platform's gRPC APIs, maildirs copies the mail)."""
