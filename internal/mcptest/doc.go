// Package mcptest runs a real MCP server in-process for tests: the official
// Go SDK (github.com/modelcontextprotocol/go-sdk) over Streamable HTTP on
// 127.0.0.1, protected by bearer tokens of an [authztest.Server] that must
// name the server as their audience (RFC 8707), with its Protected Resource
// Metadata (RFC 9728) at the path-specific well-known URI.
//
// Tokens are checked by introspection at the authorization server on every
// request. Answers follow RFC 6750 §3: 401 with error="invalid_token" for a
// token that is expired, revoked or for another audience; 403 with
// error="insufficient_scope" and the needed scope for a tool the token's
// scopes do not cover (a step-up).
//
// Tools: "echo" returns its text; "stream" sends a progress notification,
// then waits for [Server.Release] before answering, so a test can see the
// first event arrive before the second exists; "admin" needs the scope
// [AdminScope].
package mcptest
