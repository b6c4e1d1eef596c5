// Package mcpauth is what an MCP client needs to obtain tokens for a remote
// MCP server it knows only by URL, following the authorization part of the
// MCP specification (revisions 2025-06-18 and 2025-11-25):
//
//   - [Discover] probes the server, reads its Protected Resource Metadata
//     (RFC 9728) and its authorization server's metadata (RFC 8414, then
//     OpenID Connect Discovery), and refuses servers that do not offer PKCE
//     with S256;
//   - [Register] registers a client dynamically (RFC 7591);
//   - [Discovery.EndpointConfig] gives an [oauth.Config] whose every token
//     request carries the server's canonical URI as the RFC 8707 resource,
//     so a [github.com/tokenbroker/tokenbroker/client.TokenSource] built on
//     it keeps the token bound to the server across refreshes;
//   - [NewHTTPClient] fetches URLs that came from a user or a remote server
//     with a host policy, size and time limits, and no redirects to another
//     host.
//
// It uses only the standard library and package oauth. See docs/mcp.md in
// the repository for how tokenbroker uses it.
package mcpauth
