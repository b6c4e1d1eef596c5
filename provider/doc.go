// Package provider is tokenbroker's provider catalog: what each OAuth
// provider's endpoints are and how its tokens behave.
//
// A [Profile] is policy, not protocol: where the token endpoint is, how the
// client authenticates (auth style), how long tokens live when the provider
// does not say, whether refresh tokens rotate, how long before expiry to
// refresh, and which API statuses mean "stale token". The oauth package
// speaks the protocol; the broker applies the policy.
//
// [Builtins] returns profiles for well-known providers, each value sourced
// from the provider's documentation (see the comment beside it). Built-ins
// carry no client credentials: a deployment activates one by listing it in
// its configuration with a client id, which is why a built-in alone does not
// pass [Profile.Validate]. A [Catalog] is the validated, immutable set of
// active profiles.
//
// Client secrets never live in configuration files: [Profile.ResolveSecret]
// reads them from an environment variable or a file, and [Profile.String] and
// [Profile.LogValue] never print them.
package provider
