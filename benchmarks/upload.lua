-- POSTs a 1 MiB body on every request (the upload read whole by the app).
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
