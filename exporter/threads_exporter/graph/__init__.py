"""The Threads Graph API: what it sends (fields, errors), how to read it, how to call it."""
