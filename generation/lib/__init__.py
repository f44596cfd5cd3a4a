"""Model-free helpers: no database, no Django models, one copy each.

- http: the one hardened fetch (SSRF rules, redirects re-checked, byte caps, error classes)
- imaging: decoding and re-encoding images, thumbnails, content sniffing
- presign: reading the expiry of presigned URLs
- retry: Retry-After parsing and which HTTP statuses are worth another try
- sizes: byte and pixel counts in words
"""
