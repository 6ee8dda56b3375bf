"""HTTP/1.x on bytes: the request parser and the response writer. No sockets here."""
