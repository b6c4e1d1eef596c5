// Command mcpconformance makes tokenbroker the client under test of the
// official MCP conformance suite (@modelcontextprotocol/conformance): the
// suite runs it with the MCP server URL as its last argument.
//
// It starts a tokenbroker in-process (a throwaway SQLite database, public_url
// on a loopback port, private addresses allowed), creates a connect session
// for the URL, follows the link as a browser would (the suite's
// authorization server approves at once), and then makes the MCP calls
// through the proxy: initialize, tools/list and a tools/call of each tool.
// A 403 insufficient_scope is answered as tokenbroker's users would: a new
// connect session (which asks for the union of granted and needed scopes)
// and one retry, at most twice. For the pre-registration scenario the
// client from MCP_CONFORMANCE_CONTEXT is configured for the issuer found by
// discovery (package oauth/mcpauth).
//
// scripts/mcp-conformance.sh runs the suite with it. See docs/mcp.md.
package main
