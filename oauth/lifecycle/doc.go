// Package lifecycle holds the rules of one OAuth grant's life, in one place:
// when an access token is due for a refresh, whether the current token may
// be served, when the next background refresh should run, what a failed
// refresh means for the grant, how long it rests after one, and how a token
// the provider issued lands in the grant ([Apply]).
//
// It is pure: no I/O, no clock and no randomness of its own. Callers pass
// the time and the random draws, so the library (client.TokenSource), the
// server's broker, its token cache and its scheduler all reach the same
// answer for the same grant at the same moment. docs/architecture.md in the
// repository explains the rules and why they are what they are.
package lifecycle
