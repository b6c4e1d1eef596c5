// Package ui is tokenbroker's dashboard: server-rendered HTML pages under
// /ui/ where an operator signs in with an admin API key, sees every
// connection's health (active, failing, needs_reauth, revoked) and acts on
// one: refresh it now, create a reconnect link, delete it. Token values are
// never rendered.
//
// Templates and CSS are embedded in the binary; the pages need no
// JavaScript.
//
// # Sessions
//
// Signing in exchanges an admin API key for a session cookie that carries
// the key's id and an expiry, signed with HMAC-SHA256 under a key derived
// from the encryption key ring ([Options.SessionKeys]). Nothing is kept on
// the server, so any replica reading the same key file accepts the cookie.
// Every request re-checks that the key still exists, is not revoked and is
// an admin key: revoking the API key ends its sessions at once. The cookie
// is HttpOnly, SameSite=Lax, scoped to /ui, Secure when the request came
// over TLS, and expires after [Options.SessionTTL] (12h by default). Signing
// out clears the cookie in that browser only; a stolen cookie stays valid
// until it expires or its API key is revoked. The first derived key signs
// and every key of the ring verifies, so a rotation alone signs nobody out;
// removing a key from the key file signs out the sessions made under it
// once the servers have loaded the new file. Replicas should load a rotated
// file together: a cookie signed under a primary that another replica does
// not know yet is refused there.
//
// Routes: GET /ui/ (the list, with filters and keyset pages), GET
// /ui/connections/{id} (one connection), POST …/refresh, POST …/reconnect,
// GET and POST …/delete (a confirmation step), GET and POST /ui/signin,
// POST /ui/signout, GET /ui/static/… (the stylesheet).
//
// # Cross-site request forgery
//
// Every form carries a token (HMAC of the session cookie, or for the
// sign-in form of a pre-session cookie) that POST handlers check, and every
// POST must come from this origin by its Sec-Fetch-Site, Origin or Referer
// header. Either failure answers 403.
package ui
