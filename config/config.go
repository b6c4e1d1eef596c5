package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/oauth/lifecycle"
	"github.com/tokenbroker/tokenbroker/provider"
	"github.com/tokenbroker/tokenbroker/webhook"
)

// Defaults applied by [Config.SetDefaults].
const (
	DefaultListen        = "127.0.0.1:8080"
	DefaultDataDir       = "./tokenbroker-data"
	DefaultLogLevel      = "info"
	DefaultLogFormat     = "text"
	DefaultMaxReplayBody = 1 << 20 // 1 MiB
	DefaultProxyTimeout  = 60 * time.Second
	// The refresh defaults are the broker's own, so that a config and a
	// broker built in code agree.
	DefaultRefreshTimeout = broker.DefaultRefreshTimeout
	DefaultLeaseTTL       = broker.DefaultLeaseTTL

	DefaultSchedulerInterval    = time.Second
	DefaultSchedulerConcurrency = 8
	DefaultSchedulerBatchSize   = 100

	// DefaultDrainDelay is how long the server keeps accepting requests
	// after /readyz starts failing. Zero: a single process has no load
	// balancer to tell; behind one, set shutdown.drain_delay to a few
	// probe periods.
	DefaultDrainDelay = 0
	// shutdownMargin is added to the longest request timeout to make the
	// default shutdown grace, so a request started just before the
	// signal can finish.
	shutdownMargin = 5 * time.Second
)

// Config is tokenbroker's configuration. Relative paths are relative to the
// working directory of the process (not to the config file's directory),
// so a path means the same thing in the file, in a TOKENBROKER_*
// variable and on the command line.
type Config struct {
	// Listen is the HTTP listen address, host:port. Default 127.0.0.1:8080.
	Listen string
	// Database is "sqlite:<path>" or a "postgres://" URL. Default
	// "sqlite:<DataDir>/tokenbroker.db".
	Database string
	// DataDir holds the SQLite database and the key file by default.
	// Default ./tokenbroker-data.
	DataDir string
	// EncryptionKeysFile is the seal key file. Default <DataDir>/keys.
	EncryptionKeysFile string
	// PublicURL is the base URL users' browsers reach tokenbroker at, for
	// connect-flow callbacks. Default http://<Listen>, without a trailing
	// slash.
	PublicURL string
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string
	// LogFormat is text or json. Default text.
	LogFormat string
	// Providers are the active providers.
	Providers []ProviderConfig
	Proxy     ProxyConfig
	Refresh   RefreshConfig
	Webhooks  WebhooksConfig
	Scheduler SchedulerConfig
	// TLSCertFile and TLSKeyFile, when both set, make serve terminate TLS
	// itself, reloading the pair when the files change (security.go).
	TLSCertFile string
	TLSKeyFile  string
	Audit       AuditConfig
	Security    SecurityConfig
	Shutdown    ShutdownConfig
	MCP         MCPConfig

	// src says where each value came from, for error messages.
	src *source
}

// ShutdownConfig tunes the orderly shutdown on SIGTERM or SIGINT.
type ShutdownConfig struct {
	// Grace bounds how long in-flight requests may run after the listener
	// closes. Default: the longest of proxy.timeout and refresh.timeout,
	// plus 5s, so no request cut short by the deadline it was promised.
	Grace time.Duration
	// DrainDelay is how long the server goes on accepting requests after
	// /readyz starts failing, so load balancers stop sending traffic
	// before the listener closes. Default 0.
	DrainDelay time.Duration
}

// MCPConfig governs connections to MCP servers known only by URL
// (docs/mcp.md).
type MCPConfig struct {
	// AllowPrivateAddresses lets tokenbroker reach MCP servers and their
	// authorization servers on loopback and private networks, and over
	// plain http on loopback. Off by default: a URL a user gives must not
	// be a way into tokenbroker's own network.
	AllowPrivateAddresses bool `yaml:"allow_private_addresses"`
	// Clients are clients registered by hand at authorization servers of
	// MCP servers, used instead of registering dynamically.
	Clients []MCPClientConfig `yaml:"clients"`
}

// MCPClientConfig is a client registered by hand at one authorization
// server. The secret comes from an environment variable or a file, never
// from the config file.
type MCPClientConfig struct {
	Issuer           string `yaml:"issuer"`
	ClientID         string `yaml:"client_id"`
	ClientSecretEnv  string `yaml:"client_secret_env"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// TokenEndpointAuthMethod: client_secret_basic, client_secret_post or
	// none; empty picks by whether there is a secret.
	TokenEndpointAuthMethod string `yaml:"token_endpoint_auth_method"`
}

// Secret reads the client's secret from its environment variable or file;
// "" when it has neither (a public client).
func (c MCPClientConfig) Secret(lookupEnv func(string) (string, bool)) (string, error) {
	switch {
	case c.ClientSecretEnv != "" && c.ClientSecretFile != "":
		return "", fmt.Errorf("mcp.clients[%s]: set only one of client_secret_env and client_secret_file", c.Issuer)
	case c.ClientSecretEnv != "":
		v, ok := lookupEnv(c.ClientSecretEnv)
		if !ok || v == "" {
			return "", fmt.Errorf("mcp.clients[%s]: environment variable %s is not set", c.Issuer, c.ClientSecretEnv)
		}
		return v, nil
	case c.ClientSecretFile != "":
		b, err := os.ReadFile(c.ClientSecretFile)
		if err != nil {
			return "", fmt.Errorf("mcp.clients[%s]: client_secret_file: %w", c.Issuer, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", nil
}

// ProxyConfig tunes the API proxy.
type ProxyConfig struct {
	// MaxReplayBody is the largest request body the proxy buffers so it can
	// replay the request once after a refresh. YAML takes bytes or a size
	// with KiB, MiB or GiB. Default 1 MiB.
	MaxReplayBody int64
	// Timeout bounds one proxied call. Default 60s.
	Timeout time.Duration
}

// RefreshConfig tunes refreshing.
type RefreshConfig struct {
	// Timeout bounds one call to a token endpoint. Default 20s.
	Timeout time.Duration
	// LeaseTTL is how long a replica holds a connection's refresh lease
	// before renewing it; it must exceed Timeout by more than
	// broker.LeaseMargin, so that a provider call always ends before its
	// lease could lapse. Default 30s.
	LeaseTTL time.Duration
	// OnErrorInterval is the on-error refresh budget: a connection is
	// refreshed because a caller saw its token fail (a proxied 401, a
	// Refresh-On status) at most once per interval. Default 30s.
	OnErrorInterval time.Duration
}

// SchedulerConfig tunes the background refresh scheduler.
type SchedulerConfig struct {
	// Disabled turns the scheduler off in this process; tokens are then
	// refreshed only when asked for. Other replicas' schedulers still run.
	Disabled bool
	// Interval is how often the scheduler looks for due connections.
	// Default 1s.
	Interval time.Duration
	// Concurrency bounds the scheduled refreshes in flight. Default 8.
	Concurrency int
	// BatchSize is how many due connections one look claims. Default 100.
	BatchSize int
}

// ProviderConfig is one providers: entry. Name is required; every other
// field is optional and, when set, overrides the inherited profile's.
// Durations are Go duration strings ("90s", "5m", "720h"); [Config.Validate]
// parses them.
type ProviderConfig struct {
	Name string `yaml:"name"`
	// Profile names the built-in profile to inherit. Empty: the built-in
	// called Name, if there is one; otherwise nothing is inherited.
	Profile string `yaml:"profile,omitempty"`
	// Vars fill the {placeholders} of a template profile's URLs
	// (zendesk: subdomain).
	Vars map[string]string `yaml:"vars,omitempty"`

	DisplayName      string `yaml:"display_name,omitempty"`
	Issuer           string `yaml:"issuer,omitempty"`
	TokenURL         string `yaml:"token_url,omitempty"`
	AuthorizeURL     string `yaml:"authorize_url,omitempty"`
	IntrospectionURL string `yaml:"introspection_url,omitempty"`
	RevocationURL    string `yaml:"revocation_url,omitempty"`
	APIBaseURL       string `yaml:"api_base_url,omitempty"`

	ClientID         string `yaml:"client_id,omitempty"`
	ClientSecretEnv  string `yaml:"client_secret_env,omitempty"`
	ClientSecretFile string `yaml:"client_secret_file,omitempty"`
	AuthStyle        string `yaml:"auth_style,omitempty"`

	// Scopes are added to the inherited profile's. Built-ins list only the
	// scopes a refresh token depends on (offline_access and the like), which
	// no deployment of a token broker wants to lose.
	Scopes []string `yaml:"scopes,omitempty"`
	// AuthParams are merged over the inherited profile's; a parameter set to
	// "" is removed.
	AuthParams map[string]string `yaml:"auth_params,omitempty"`

	RefreshWindow string `yaml:"refresh_window,omitempty"`
	// RefreshOn replaces the inherited list when set; [] means never.
	RefreshOn []int `yaml:"refresh_on,omitempty"`
	// RefreshOnInvalidToken: see provider.Profile.
	RefreshOnInvalidToken *bool  `yaml:"refresh_on_invalid_token,omitempty"`
	DefaultExpiresIn      string `yaml:"default_expires_in,omitempty"`
	RefreshTokenLifetime  string `yaml:"refresh_token_lifetime,omitempty"`
	RefreshIdleTimeout    string `yaml:"refresh_idle_timeout,omitempty"`
	Rotation              string `yaml:"rotation,omitempty"`
	RotationGrace         string `yaml:"rotation_grace,omitempty"`
	// BadRequestTransient overrides the inherited profile's when set.
	BadRequestTransient *bool `yaml:"bad_request_transient,omitempty"`

	TokenRateLimit float64 `yaml:"token_rate_limit,omitempty"`
	TokenRateBurst int     `yaml:"token_rate_burst,omitempty"`

	// AllowResponseHeaders are provider response headers the proxy passes
	// to callers although it drops them by default (Set-Cookie, CORS
	// headers and the like; docs/security.md).
	AllowResponseHeaders []string `yaml:"allow_response_headers,omitempty"`
}

// fileConfig is the YAML form of Config. Durations and sizes are strings so
// a bad one is reported by field name rather than by yaml's type error.
type fileConfig struct {
	Listen             string           `yaml:"listen"`
	Database           string           `yaml:"database"`
	DataDir            string           `yaml:"data_dir"`
	EncryptionKeysFile string           `yaml:"encryption_keys_file"`
	PublicURL          string           `yaml:"public_url"`
	LogLevel           string           `yaml:"log_level"`
	LogFormat          string           `yaml:"log_format"`
	Providers          []ProviderConfig `yaml:"providers"`
	Proxy              fileProxy        `yaml:"proxy"`
	Refresh            fileRefresh      `yaml:"refresh"`
	Webhooks           WebhooksConfig   `yaml:"webhooks"`
	Scheduler          fileScheduler    `yaml:"scheduler"`
	TLSCertFile        string           `yaml:"tls_cert_file"`
	TLSKeyFile         string           `yaml:"tls_key_file"`
	Audit              fileAudit        `yaml:"audit"`
	Security           fileSecurity     `yaml:"security"`
	Shutdown           fileShutdown     `yaml:"shutdown"`
	MCP                MCPConfig        `yaml:"mcp"`
}

type fileShutdown struct {
	Grace      string `yaml:"grace"`
	DrainDelay string `yaml:"drain_delay"`
}

type fileProxy struct {
	MaxReplayBody string `yaml:"max_replay_body"`
	Timeout       string `yaml:"timeout"`
}

type fileRefresh struct {
	Timeout         string `yaml:"timeout"`
	LeaseTTL        string `yaml:"lease_ttl"`
	OnErrorInterval string `yaml:"on_error_interval"`
}

type fileScheduler struct {
	Disabled    bool   `yaml:"disabled"`
	Interval    string `yaml:"interval"`
	Concurrency int    `yaml:"concurrency"`
	BatchSize   int    `yaml:"batch_size"`
}

// fieldError is a problem with one configuration value, named by its path.
type fieldError struct {
	file    string // the config file, when the value came from one
	line    int    // its line in the file, 0 when unknown
	env     string // the environment variable that set the value
	path    string // "providers[1].refresh_window"
	problem string
	err     error
}

func (e *fieldError) Error() string {
	msg := "config: "
	switch {
	case e.env != "":
		return msg + e.path + " (from " + e.env + "): " + e.problem
	case e.file != "" && e.line > 0:
		msg += fmt.Sprintf("%s:%d: ", e.file, e.line)
	case e.file != "":
		msg += e.file + ": "
	}
	return msg + e.path + ": " + e.problem
}

// locate fills in where the value came from, from the source.
func (e *fieldError) locate(src *source) {
	if src == nil || e.file != "" || e.env != "" {
		return
	}
	if v, ok := src.env[e.path]; ok {
		e.env = v
		return
	}
	e.file, e.line = src.file, src.lineOf(e.path)
}
func (e *fieldError) Unwrap() error { return e.err }

// Load reads the configuration file at path and applies defaults
// ([Config.SetDefaults]). An empty path means no file: defaults only. Load
// rejects unknown fields, more than one YAML document, and durations or
// sizes it cannot parse; it does not check the values further: call
// [Config.Validate] before use.
//
// The environment overrides the file: TOKENBROKER_LISTEN sets listen,
// TOKENBROKER_PROXY_TIMEOUT sets proxy.timeout, and so on for every
// setting [EnvNames] lists; ${VAR} in any string of the file is replaced
// by the variable's value.
func Load(path string) (*Config, error) {
	return LoadEnv(path, os.LookupEnv)
}

// LoadEnv is [Load] with the environment read through lookup.
func LoadEnv(path string, lookup func(string) (string, bool)) (*Config, error) {
	c := &Config{src: &source{file: path, lines: map[string]int{}, env: map[string]string{}}}
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	if err := c.decode(path, data, lookup); err != nil {
		return nil, err
	}
	c.SetDefaults()
	return c, nil
}

// Read is [Load] followed by [Config.Validate], reporting the problems of
// both in one pass, in file order: a file with three mistakes gets three
// messages at once, each with its line and path.
func Read(path string) (*Config, error) {
	return ReadEnv(path, os.LookupEnv)
}

// ReadEnv is [Read] with the environment read through lookup.
func ReadEnv(path string, lookup func(string) (string, bool)) (*Config, error) {
	c, err := LoadEnv(path, lookup)
	if err != nil {
		var le *loadError
		if !errors.As(err, &le) || le.partial == nil {
			return nil, err
		}
		// The file parsed but some values did not: check the rest too, and
		// drop what Validate says again about the same paths.
		c = le.partial
		seen := map[string]bool{}
		for _, e := range flatten(le.err) {
			var fe *fieldError
			if errors.As(e, &fe) {
				seen[fe.path] = true
			}
		}
		errs := flatten(le.err)
		for _, e := range flatten(c.Validate()) {
			var fe *fieldError
			if errors.As(e, &fe) && seen[fe.path] {
				continue
			}
			errs = append(errs, e)
		}
		return nil, sortedErrors(errs)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// loadError carries the configuration as far as it could be read, so Read
// can report the remaining problems in the same pass.
type loadError struct {
	err     error
	partial *Config
}

func (e *loadError) Error() string { return e.err.Error() }
func (e *loadError) Unwrap() error { return e.err }

// sortedErrors joins errors in file order (then environment ones, then the
// rest).
func sortedErrors(errs []error) error {
	key := func(e error) (int, string) {
		var fe *fieldError
		if errors.As(e, &fe) {
			if fe.env != "" {
				return 1 << 30, fe.path
			}
			return fe.line, fe.path
		}
		return 1<<30 + 1, e.Error()
	}
	slices.SortStableFunc(errs, func(a, b error) int {
		la, pa := key(a)
		lb, pb := key(b)
		if la != lb {
			return la - lb
		}
		return strings.Compare(pa, pb)
	})
	return errors.Join(errs...)
}

func (c *Config) decode(file string, data []byte, lookup func(string) (string, bool)) error {
	src := c.src
	var f fileConfig
	var errs []error
	if len(bytes.TrimSpace(data)) > 0 {
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return fmt.Errorf("config: %s: %w", file, err)
		}
		indexLines(&doc, "", src.lines)
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return fmt.Errorf("config: %s: %w", file, err)
			}
			// yaml goes on decoding after a type error: report them all
			// and check the rest of the file too.
			errs = append(errs, yamlErrors(src, te)...)
		}
		var extra yaml.Node
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			return fmt.Errorf("config: %s: more than one YAML document", file)
		}
		expandEnv(reflect.ValueOf(&f).Elem(), "", lookup, &errs, src)
	}
	errs = append(errs, applyEnv(&f, lookup, src)...)

	*c = Config{
		src:                src,
		Listen:             f.Listen,
		Database:           f.Database,
		DataDir:            f.DataDir,
		EncryptionKeysFile: f.EncryptionKeysFile,
		PublicURL:          f.PublicURL,
		LogLevel:           f.LogLevel,
		LogFormat:          f.LogFormat,
		Providers:          f.Providers,
		Webhooks:           f.Webhooks,
		TLSCertFile:        f.TLSCertFile,
		TLSKeyFile:         f.TLSKeyFile,
	}
	parseDur := func(path, s string, dst *time.Duration) {
		if s == "" {
			return
		}
		d, err := parseDuration(s)
		if err != nil {
			fe := &fieldError{path: path, problem: err.Error()}
			fe.locate(src)
			errs = append(errs, fe)
			return
		}
		*dst = d
	}
	parseDur("proxy.timeout", f.Proxy.Timeout, &c.Proxy.Timeout)
	parseDur("refresh.timeout", f.Refresh.Timeout, &c.Refresh.Timeout)
	parseDur("refresh.lease_ttl", f.Refresh.LeaseTTL, &c.Refresh.LeaseTTL)
	parseDur("refresh.on_error_interval", f.Refresh.OnErrorInterval, &c.Refresh.OnErrorInterval)
	parseDur("scheduler.interval", f.Scheduler.Interval, &c.Scheduler.Interval)
	parseDur("shutdown.grace", f.Shutdown.Grace, &c.Shutdown.Grace)
	parseDur("shutdown.drain_delay", f.Shutdown.DrainDelay, &c.Shutdown.DrainDelay)
	c.decodeSecurity(f, parseDur)
	c.Scheduler.Disabled = f.Scheduler.Disabled
	c.MCP = f.MCP
	c.Scheduler.Concurrency, c.Scheduler.BatchSize = f.Scheduler.Concurrency, f.Scheduler.BatchSize
	if f.Proxy.MaxReplayBody != "" {
		n, err := parseSize(f.Proxy.MaxReplayBody)
		if err != nil {
			fe := &fieldError{path: "proxy.max_replay_body", problem: err.Error()}
			fe.locate(src)
			errs = append(errs, fe)
		}
		c.Proxy.MaxReplayBody = n
	}
	for _, e := range errs {
		var fe *fieldError
		if errors.As(e, &fe) {
			fe.locate(src)
		}
	}
	if len(errs) > 0 {
		partial := *c
		partial.SetDefaults()
		return &loadError{err: sortedErrors(errs), partial: &partial}
	}
	return nil
}

var unknownFieldRE = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)$`)

// yamlErrors rewords yaml's messages, which name Go types, in the file's
// terms: the path of the field, and what it must be.
func yamlErrors(src *source, te *yaml.TypeError) []error {
	var out []error
	for _, m := range te.Errors {
		if fe, ok := rewordTypeError(src, m); ok {
			out = append(out, fe)
			continue
		}
		sub := unknownFieldRE.FindStringSubmatch(m)
		if sub == nil {
			out = append(out, fmt.Errorf("config: %s: %s", src.file, m))
			continue
		}
		line, _ := strconv.Atoi(sub[1])
		path := pathAtLine(src.lines, line)
		if path == "" {
			path = sub[2]
		}
		known := knownFields[sub[3]]
		problem := "unknown setting"
		if s := closest(sub[2], known); s != "" {
			problem += fmt.Sprintf("; did you mean %q?", s)
		} else if len(known) > 0 {
			problem += " (known here: " + strings.Join(known, ", ") + ")"
		}
		if strings.Contains(sub[2], "secret") && sub[3] == "config.WebhookConfig" {
			problem += "; secrets are never written in the file: use secret_env or secret_file"
		} else if strings.Contains(sub[2], "secret") {
			problem += "; secrets are never written in the file: use client_secret_env or client_secret_file"
		}
		out = append(out, &fieldError{file: src.file, line: line, path: path, problem: problem})
	}
	return out
}

// knownFields lists the settings of each section, by the Go type yaml
// names in its messages.
var knownFields = func() map[string][]string {
	out := map[string][]string{}
	for _, v := range []any{fileConfig{}, ProviderConfig{}, fileProxy{}, fileRefresh{}, WebhooksConfig{}, WebhookConfig{}, fileScheduler{}, fileShutdown{}, fileAudit{}, fileSecurity{}, MCPConfig{}, MCPClientConfig{}} {
		t := reflect.TypeOf(v)
		var names []string
		for i := range t.NumField() {
			if n, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); n != "" && n != "-" {
				names = append(names, n)
			}
		}
		out[t.String()] = names
	}
	return out
}()

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write it like \"90s\", \"5m\" or \"720h\")", s)
	}
	return d, nil
}

// parseSize parses a byte count: digits, optionally followed by KiB, MiB or
// GiB.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (write bytes, or a whole number of KiB, MiB or GiB)", s)
	}
	return n * mult, nil
}

// SetDefaults fills every empty field with its default. Database and
// EncryptionKeysFile default to paths inside DataDir, PublicURL to an http
// URL for Listen. A trailing slash is removed from PublicURL.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Database == "" {
		c.Database = "sqlite:" + inDir(c.DataDir, "tokenbroker.db")
	}
	if c.EncryptionKeysFile == "" {
		c.EncryptionKeysFile = inDir(c.DataDir, "keys")
	}
	if c.PublicURL == "" {
		if host, port, err := net.SplitHostPort(c.Listen); err == nil {
			if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
				host = "localhost"
			}
			c.PublicURL = "http://" + net.JoinHostPort(host, port)
		}
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.LogFormat == "" {
		c.LogFormat = DefaultLogFormat
	}
	if c.Proxy.MaxReplayBody == 0 {
		c.Proxy.MaxReplayBody = DefaultMaxReplayBody
	}
	if c.Proxy.Timeout == 0 {
		c.Proxy.Timeout = DefaultProxyTimeout
	}
	if c.Refresh.Timeout == 0 {
		c.Refresh.Timeout = DefaultRefreshTimeout
	}
	if c.Refresh.LeaseTTL == 0 {
		c.Refresh.LeaseTTL = DefaultLeaseTTL
	}
	if c.Refresh.OnErrorInterval == 0 {
		c.Refresh.OnErrorInterval = lifecycle.DefaultOnErrorInterval
	}
	if c.Scheduler.Interval == 0 {
		c.Scheduler.Interval = DefaultSchedulerInterval
	}
	if c.Scheduler.Concurrency == 0 {
		c.Scheduler.Concurrency = DefaultSchedulerConcurrency
	}
	if c.Scheduler.BatchSize == 0 {
		c.Scheduler.BatchSize = DefaultSchedulerBatchSize
	}
	if c.Shutdown.Grace == 0 {
		c.Shutdown.Grace = max(c.Proxy.Timeout, c.Refresh.Timeout) + shutdownMargin
	}
	c.setSecurityDefaults()
}

// inDir joins dir and name keeping dir as written ("./data" stays
// "./data/keys", where filepath.Join would drop the "./").
func inDir(dir, name string) string {
	if strings.HasSuffix(dir, "/") || strings.HasSuffix(dir, string(os.PathSeparator)) {
		return dir + name
	}
	return dir + string(os.PathSeparator) + name
}

// Validate checks every value, including each provider's merged profile and
// that its client secret can be read, and returns every problem found,
// joined; each message names the field's path in the file. Call it after
// [Load] (or [Config.SetDefaults] for a Config built in code).
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &fieldError{path: path, problem: fmt.Sprintf(format, args...)})
	}

	listenOK := true
	if host, port, err := net.SplitHostPort(c.Listen); err != nil || !validPort(port) || strings.ContainsAny(host, " /") {
		bad("listen", "%q is not host:port (like 127.0.0.1:8080 or :8080)", c.Listen)
		listenOK = false
	}
	if _, _, err := c.DatabaseDSN(); err != nil {
		errs = append(errs, err)
	}
	if c.DataDir == "" {
		bad("data_dir", "required")
	}
	if c.EncryptionKeysFile == "" {
		bad("encryption_keys_file", "required")
	}
	switch {
	case c.PublicURL != "":
		if problem := checkPublicURL(c.PublicURL); problem != "" {
			bad("public_url", "%s", problem)
		}
	case listenOK:
		bad("public_url", "required")
	}
	seenIssuer := map[string]bool{}
	for i, mc := range c.MCP.Clients {
		path := fmt.Sprintf("mcp.clients[%d]", i)
		if u, err := url.Parse(mc.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad(path+".issuer", "%q is not an http(s) issuer URL", mc.Issuer)
		} else if seenIssuer[mc.Issuer] {
			bad(path+".issuer", "%q is listed twice", mc.Issuer)
		}
		seenIssuer[mc.Issuer] = true
		if strings.TrimSpace(mc.ClientID) == "" {
			bad(path+".client_id", "required")
		}
		if _, err := mc.Secret(os.LookupEnv); err != nil {
			errs = append(errs, err)
		}
		switch mc.TokenEndpointAuthMethod {
		case "", "client_secret_basic", "client_secret_post", "none":
		default:
			bad(path+".token_endpoint_auth_method", "%q is not client_secret_basic, client_secret_post or none", mc.TokenEndpointAuthMethod)
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		bad("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	if !slices.Contains([]string{"text", "json"}, c.LogFormat) {
		bad("log_format", "%q is not one of text, json", c.LogFormat)
	}
	if c.Proxy.MaxReplayBody < 0 {
		bad("proxy.max_replay_body", "must not be negative")
	}
	for _, d := range []struct {
		path  string
		value time.Duration
	}{
		{"proxy.timeout", c.Proxy.Timeout},
		{"refresh.timeout", c.Refresh.Timeout},
		{"refresh.lease_ttl", c.Refresh.LeaseTTL},
		{"refresh.on_error_interval", c.Refresh.OnErrorInterval},
		{"scheduler.interval", c.Scheduler.Interval},
	} {
		if d.value <= 0 {
			bad(d.path, "must be positive, got %s", d.value)
		}
	}
	if c.Refresh.Timeout > 0 && c.Refresh.LeaseTTL > 0 {
		if err := broker.CheckLeaseTiming(c.Refresh.Timeout, c.Refresh.LeaseTTL); err != nil {
			bad("refresh.lease_ttl", "%s (refresh.timeout is %s): another replica could take the lease while a provider call is in flight and send the same refresh token again; raise lease_ttl or lower timeout", err, c.Refresh.Timeout)
		}
	}
	if c.Scheduler.Concurrency <= 0 {
		bad("scheduler.concurrency", "must be positive, got %d", c.Scheduler.Concurrency)
	}
	if c.Scheduler.BatchSize <= 0 {
		bad("scheduler.batch_size", "must be positive, got %d", c.Scheduler.BatchSize)
	}
	if c.Shutdown.Grace <= 0 {
		bad("shutdown.grace", "must be positive, got %s", c.Shutdown.Grace)
	}
	if c.Shutdown.DrainDelay < 0 {
		bad("shutdown.drain_delay", "must not be negative, got %s", c.Shutdown.DrainDelay)
	}

	errs = append(errs, c.validateWebhooks()...)
	errs = append(errs, c.validateSecurity()...)
	_, perr := c.profiles()
	errs = append(errs, perr...)
	var out []error
	for _, e := range errs {
		for _, e := range flatten(e) {
			var fe *fieldError
			if errors.As(e, &fe) {
				fe.locate(c.src)
			}
			out = append(out, e)
		}
	}
	return sortedErrors(out)
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

// checkPublicURL returns what is wrong with the public URL, or "".
func checkPublicURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
		return "must be an absolute http or https URL"
	case u.User != nil:
		return "must not contain credentials"
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "must not have a query or fragment"
	}
	return ""
}

// Catalog builds the provider catalog: each providers: entry merged over
// the built-in profile it inherits, with its client secret read from the
// environment or its file. Built-ins not listed in the configuration are not
// in the catalog.
func (c *Config) Catalog() (*provider.Catalog, error) {
	profiles, errs := c.profiles()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cat, err := provider.NewCatalog(profiles)
	if err != nil {
		// profiles validated each one already; this is a safety net.
		return nil, fmt.Errorf("config: %w", err)
	}
	return cat, nil
}

// profiles merges, validates and resolves the secret of every provider
// entry.
func (c *Config) profiles() ([]provider.Profile, []error) {
	builtins := provider.Builtins()
	var (
		out  []provider.Profile
		errs []error
		seen = map[string]int{}
	)
	for i, pc := range c.Providers {
		if pc.Name != "" {
			if j, dup := seen[pc.Name]; dup {
				errs = append(errs, &fieldError{path: fmt.Sprintf("providers[%d].name", i), problem: fmt.Sprintf("%q is already used by providers[%d]", pc.Name, j)})
				continue
			}
			seen[pc.Name] = i
		}
		p, perrs := c.profile(i, builtins)
		if len(perrs) > 0 {
			errs = append(errs, perrs...)
			continue
		}
		out = append(out, p)
	}
	return out, errs
}

// ProviderProfile builds the providers[i] entry alone (merged, validated,
// secret read), for commands that report each provider on its own. Errors
// carry the entry's own index and line.
func (c *Config) ProviderProfile(i int) (provider.Profile, error) {
	p, errs := c.profile(i, provider.Builtins())
	for _, e := range errs {
		var fe *fieldError
		if errors.As(e, &fe) {
			fe.locate(c.src)
		}
	}
	return p, errors.Join(errs...)
}

func (c *Config) profile(i int, builtins map[string]provider.Profile) (provider.Profile, []error) {
	pc := c.Providers[i]
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &fieldError{path: fmt.Sprintf("providers[%d].%s", i, field), problem: fmt.Sprintf(format, args...)})
	}
	// Problems local to the entry (a bad duration, an unknown profile)
	// do not stop the checks of the rest of it: report everything.
	p, perrs := pc.merge(builtins)
	for _, e := range perrs {
		bad(e.path, "%s", e.problem)
	}
	var err error
	if p, err = p.Expand(pc.Vars); err == nil {
		err = p.Validate()
	}
	if err == nil {
		p, err = p.ResolveSecret(nil)
	}
	if err != nil {
		errs = append(errs, reindex(i, err)...)
		if hint := builtinHint(pc, builtins); hint != "" {
			bad("name", "%s", hint)
		}
	}
	return p, errs
}

// builtinHint says, for an entry that failed validation and inherits
// nothing, which built-in its name is probably a misspelling of: "githb"
// fails with "token_url: required" because it is a custom provider.
func builtinHint(pc ProviderConfig, builtins map[string]provider.Profile) string {
	if pc.Profile != "" || pc.Name == "" {
		return ""
	}
	if _, ok := builtins[pc.Name]; ok {
		return ""
	}
	if s := closest(pc.Name, slices.Collect(maps.Keys(builtins))); s != "" {
		return fmt.Sprintf("%q is not a built-in provider, so nothing is inherited; did you mean %q? (or give a custom provider its token_url or issuer)", pc.Name, s)
	}
	return ""
}

// reindex turns the provider package's "providers[name].field" errors into
// "providers[i].field" ones, matching the file's structure even when the
// name is missing or wrong.
func reindex(i int, err error) []error {
	var out []error
	for _, e := range flatten(err) {
		var fe *provider.FieldError
		if errors.As(e, &fe) {
			out = append(out, &fieldError{path: fmt.Sprintf("providers[%d].%s", i, fe.Field), problem: fe.Problem, err: fe.Err})
		} else {
			out = append(out, fmt.Errorf("config: providers[%d]: %w", i, e))
		}
	}
	return out
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// merge builds the entry's profile: the inherited built-in (if any) with the
// entry's fields laid over it. It reports the problems that
// [provider.Profile.Validate] cannot see (an unknown profile, a duration
// that does not parse) with paths relative to the entry.
func (pc ProviderConfig) merge(builtins map[string]provider.Profile) (provider.Profile, []*fieldError) {
	var errs []*fieldError
	bad := func(field, format string, args ...any) {
		errs = append(errs, &fieldError{path: field, problem: fmt.Sprintf(format, args...)})
	}
	var p provider.Profile
	switch base, ok := builtins[pc.Profile]; {
	case pc.Profile != "" && !ok:
		hint := ""
		if s := closest(pc.Profile, slices.Collect(maps.Keys(builtins))); s != "" {
			hint = fmt.Sprintf("did you mean %q? ", s)
		}
		bad("profile", "unknown profile %q (%sbuilt-ins: %s)", pc.Profile, hint, strings.Join(slices.Sorted(maps.Keys(builtins)), ", "))
	case pc.Profile != "":
		p = base
	default:
		p = builtins[pc.Name] // zero Profile for a custom provider
	}
	p.Name = pc.Name

	setStr := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	setStr(&p.DisplayName, pc.DisplayName)
	setStr(&p.Issuer, pc.Issuer)
	setStr(&p.TokenURL, pc.TokenURL)
	setStr(&p.AuthorizeURL, pc.AuthorizeURL)
	setStr(&p.IntrospectionURL, pc.IntrospectionURL)
	setStr(&p.RevocationURL, pc.RevocationURL)
	setStr(&p.APIBaseURL, pc.APIBaseURL)
	setStr(&p.ClientID, pc.ClientID)
	if pc.ClientSecretEnv != "" || pc.ClientSecretFile != "" {
		p.ClientSecretEnv, p.ClientSecretFile = pc.ClientSecretEnv, pc.ClientSecretFile
	}
	setStr(&p.AuthStyle, pc.AuthStyle)
	setStr(&p.Rotation, pc.Rotation)

	for _, s := range pc.Scopes {
		if !slices.Contains(p.Scopes, s) {
			p.Scopes = append(p.Scopes, s)
		}
	}
	if len(pc.AuthParams) > 0 && p.AuthParams == nil {
		p.AuthParams = map[string]string{}
	}
	for k, v := range pc.AuthParams {
		if v == "" {
			delete(p.AuthParams, k)
		} else {
			p.AuthParams[k] = v
		}
	}
	if pc.RefreshOn != nil {
		p.RefreshOn = slices.Clone(pc.RefreshOn)
	}
	if pc.RefreshOnInvalidToken != nil {
		p.RefreshOnInvalidToken = *pc.RefreshOnInvalidToken
	}
	if pc.BadRequestTransient != nil {
		p.BadRequestTransient = *pc.BadRequestTransient
	}

	for _, d := range []struct {
		field string
		value string
		dst   *time.Duration
	}{
		{"refresh_window", pc.RefreshWindow, &p.RefreshWindow},
		{"default_expires_in", pc.DefaultExpiresIn, &p.DefaultExpiresIn},
		{"refresh_token_lifetime", pc.RefreshTokenLifetime, &p.RefreshTokenLifetime},
		{"refresh_idle_timeout", pc.RefreshIdleTimeout, &p.RefreshIdleTimeout},
		{"rotation_grace", pc.RotationGrace, &p.RotationGrace},
	} {
		if d.value == "" {
			continue
		}
		v, err := parseDuration(d.value)
		if err != nil {
			bad(d.field, "%s", err)
			continue
		}
		*d.dst = v
	}
	if pc.TokenRateLimit != 0 {
		p.TokenRateLimit = pc.TokenRateLimit
	}
	if pc.TokenRateBurst != 0 {
		p.TokenRateBurst = pc.TokenRateBurst
	}
	return p, errs
}

// DatabaseDSN splits Database into a driver name and the string that
// driver opens: ("sqlite", "./tokenbroker-data/tokenbroker.db") for
// "sqlite:./tokenbroker-data/tokenbroker.db" ("sqlite:///abs/path" gives
// "/abs/path"), and ("postgres", the whole URL) for postgres:// and
// postgresql:// URLs. Errors never repeat the URL, which may hold a
// password.
func (c *Config) DatabaseDSN() (driver, dsn string, err error) {
	bad := func(format string, args ...any) (string, string, error) {
		return "", "", &fieldError{path: "database", problem: fmt.Sprintf(format, args...)}
	}
	db := c.Database
	scheme, rest, ok := strings.Cut(db, ":")
	switch {
	case db == "":
		return bad("required")
	case !ok:
		return bad("no scheme (want sqlite:<path> or postgres://…)")
	case scheme == "sqlite":
		path := strings.TrimPrefix(rest, "//")
		if path == "" {
			return bad("sqlite: needs a file path (sqlite:./tokenbroker-data/tokenbroker.db)")
		}
		return "sqlite", path, nil
	case scheme == "postgres" || scheme == "postgresql":
		if _, err := url.Parse(db); err != nil || !strings.HasPrefix(rest, "//") {
			return bad("not a valid %s:// URL", scheme)
		}
		return "postgres", db, nil
	default:
		if !validScheme(scheme) {
			return bad("no scheme (want sqlite:<path> or postgres://…)")
		}
		return bad("unknown scheme %q (want sqlite:<path> or postgres://…)", scheme)
	}
}

var schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)

func validScheme(s string) bool { return schemeRE.MatchString(s) }

// LogValue implements [slog.LogValuer]: the settings worth logging at
// start-up, with any database password redacted.
func (c *Config) LogValue() slog.Value {
	db := "<redacted>"
	switch driver, dsn, err := c.DatabaseDSN(); {
	case err != nil:
	case driver == "sqlite":
		db = "sqlite:" + dsn
	default:
		if u, err := url.Parse(dsn); err == nil {
			// pgx also takes the password as a query parameter.
			if q := u.Query(); q.Has("password") {
				q.Set("password", "xxxxx")
				u.RawQuery = q.Encode()
			}
			db = u.Redacted()
		}
	}
	names := make([]string, 0, len(c.Providers))
	for _, p := range c.Providers {
		names = append(names, p.Name)
	}
	return slog.GroupValue(
		slog.String("listen", c.Listen),
		slog.String("database", db),
		slog.String("data_dir", c.DataDir),
		slog.String("encryption_keys_file", c.EncryptionKeysFile),
		slog.String("public_url", c.PublicURL),
		slog.Any("providers", names),
	)
}

// WebhooksConfig is the webhooks: section (docs/webhooks.md).
type WebhooksConfig struct {
	Endpoints []WebhookConfig `yaml:"endpoints"`
}

// WebhookConfig is one webhooks.endpoints entry. The signing secret comes
// from SecretEnv or SecretFile, never from the file itself.
type WebhookConfig struct {
	// Name identifies the endpoint in the outbox, logs and metrics;
	// renaming it makes it a new endpoint.
	Name       string `yaml:"name"`
	URL        string `yaml:"url"`
	SecretEnv  string `yaml:"secret_env,omitempty"`
	SecretFile string `yaml:"secret_file,omitempty"`
	// Events filters the event types sent; empty means all.
	Events []string `yaml:"events,omitempty"`
}

// minWebhookSecret is the shortest signing secret accepted: an HMAC key
// anyone can guess signs forgeries.
const minWebhookSecret = 16

var webhookNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Secret reads the endpoint's signing secret from its environment variable
// or file (trailing line breaks trimmed). lookupEnv is [os.LookupEnv] when
// nil. Errors name the variable or file, never the content.
func (w WebhookConfig) Secret(lookupEnv func(string) (string, bool)) ([]byte, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	var v string
	switch {
	case w.SecretEnv != "" && w.SecretFile != "":
		return nil, errors.New("set only one of secret_env and secret_file")
	case w.SecretEnv != "":
		var ok bool
		if v, ok = lookupEnv(w.SecretEnv); !ok {
			return nil, fmt.Errorf("environment variable %s is not set", w.SecretEnv)
		}
	case w.SecretFile != "":
		f, err := os.Open(w.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", w.SecretFile, err)
		}
		b, err := io.ReadAll(io.LimitReader(f, 64<<10))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", w.SecretFile, err)
		}
		v = string(b)
	default:
		return nil, errors.New("required: set secret_env or secret_file")
	}
	v = strings.TrimRight(v, "\r\n")
	if len(v) < minWebhookSecret {
		return nil, fmt.Errorf("the secret is shorter than %d bytes; generate one with `openssl rand -hex 32`", minWebhookSecret)
	}
	return []byte(v), nil
}

func (c *Config) validateWebhooks() []error {
	var errs []error
	names := map[string]bool{}
	for i, w := range c.Webhooks.Endpoints {
		path := fmt.Sprintf("webhooks.endpoints[%d]", i)
		bad := func(field, format string, args ...any) {
			errs = append(errs, &fieldError{path: path + "." + field, problem: fmt.Sprintf(format, args...)})
		}
		switch {
		case !webhookNameRE.MatchString(w.Name):
			bad("name", "%q is not 1-64 letters, digits, '.', '_' or '-'", w.Name)
		case names[w.Name]:
			bad("name", "%q is used by another endpoint", w.Name)
		}
		names[w.Name] = true
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The URL is not quoted: some receivers put a credential in it.
			bad("url", "is not an absolute http or https URL")
		}
		if _, err := w.Secret(nil); err != nil {
			field := "secret_env"
			if w.SecretFile != "" {
				field = "secret_file"
			}
			bad(field, "%v", err)
		}
		for _, e := range w.Events {
			if !webhook.ValidEventType(e) {
				bad("events", "unknown event type %q (known: %s)", e, strings.Join(webhook.EventTypes(), ", "))
			}
		}
	}
	return errs
}
