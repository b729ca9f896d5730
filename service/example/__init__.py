"""The example schema served by default: notes and chat messages stored in Postgres."""
