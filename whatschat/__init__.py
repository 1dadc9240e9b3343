"""WhatsChat Serverless: the shared domain package. See docs/architecture.md."""
