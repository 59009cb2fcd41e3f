"""AI Bridge: a mitmproxy addon that governs AI coding tools' traffic to LLM providers."""
