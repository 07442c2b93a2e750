"""`bot dashboard`: a read-only web page over the trade log, served on 127.0.0.1."""
