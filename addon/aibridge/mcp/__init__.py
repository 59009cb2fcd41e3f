"""Company tools for every agent: MCP servers the operator configures (`[mcp.servers.NAME]`),
whose tools the bridge offers to the model on bridged requests and runs itself.

- `names`: the injected name of a server's tool (`bmcp_<server>_<tool>`).
- `catalog`: which tools a request gets (allow / deny on tool names, `match` on the caller).
- `link`: one server's connection (the official `mcp` SDK's client, Streamable HTTP): its tool
  list, fetched at start and refreshed on `notifications/tools/list_changed` and periodically.
- `results`: a tool's result as the text the model reads, within the size limit.
- `manager`: every server, kept in line with the configuration; runs calls with a timeout.

The loop that runs the calls a model makes and asks the provider again is
`streaming/tool_loop.py`; each API's tool format is `providers/tooluse.py`.
"""
