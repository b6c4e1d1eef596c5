// Package config loads and checks tokenbroker's YAML configuration.
//
// [Load] reads the file strictly: an unknown field is an error naming it and
// its line, so a typo cannot silently fall back to a default. [Config.Validate]
// then checks every value and reports every problem at once, each named by
// its path in the file (`providers[1].refresh_window: "5 minutes" is not a
// duration`), so `tokenbroker serve` fails at start-up rather than at the
// first refresh.
//
// Secrets never appear in the file: client secrets come from an environment
// variable (client_secret_env) or a file (client_secret_file), and there is
// no client_secret field to put one in. A database password belongs in the
// PostgreSQL URL only when the file is protected accordingly; prefer the
// standard PG* environment variables or a service file.
//
// Providers: each entry under providers: is one active provider. An entry
// inherits a built-in profile (see [provider.Builtins]) named by profile:,
// or by its own name when that is a built-in, and overrides any of its
// fields. A built-in that is not listed is not active: it has no client id.
// See example.yaml in this directory.
package config
