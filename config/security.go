package config

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// Defaults of the audit and security sections.
const (
	DefaultAuditRetention    = 90 * 24 * time.Hour
	DefaultBodyTimeout       = 60 * time.Second
	DefaultPublicBodyTimeout = 10 * time.Second
	DefaultMaxConnections    = 4096
)

// AuditConfig is the audit: section (docs/security.md, "Audit log").
type AuditConfig struct {
	// Disabled turns the audit trail off. Default: on.
	Disabled bool
	// Retention is how long entries are kept. Default 90 days (2160h).
	Retention time.Duration
	// Stream copies every entry as a JSON line to "stdout" or to a file
	// (appended to), for a SIEM. Default: none.
	Stream string
}

// SecurityConfig is the security: section (docs/security.md).
type SecurityConfig struct {
	// TrustForwardedProto lets a proxy's X-Forwarded-Proto: https mark the
	// dashboard's cookies Secure. Only behind a proxy that sets (and
	// overwrites) the header. Not needed when public_url is https.
	TrustForwardedProto bool
	// MaxConnections bounds the client connections served at once. Default 4096.
	MaxConnections int
	// BodyTimeout bounds how long a request with a valid API key may take
	// to send its body. Default 60s.
	BodyTimeout time.Duration
	// PublicBodyTimeout bounds it for every other request. Default 10s.
	PublicBodyTimeout time.Duration
}

type fileAudit struct {
	Disabled  bool   `yaml:"disabled"`
	Retention string `yaml:"retention"`
	Stream    string `yaml:"stream"`
}

type fileSecurity struct {
	TrustForwardedProto bool   `yaml:"trust_forwarded_proto"`
	MaxConnections      int    `yaml:"max_connections"`
	BodyTimeout         string `yaml:"body_timeout"`
	PublicBodyTimeout   string `yaml:"public_body_timeout"`
}

func (c *Config) decodeSecurity(f fileConfig, parseDur func(path, s string, dst *time.Duration)) {
	c.Audit.Disabled, c.Audit.Stream = f.Audit.Disabled, f.Audit.Stream
	parseDur("audit.retention", f.Audit.Retention, &c.Audit.Retention)
	c.Security.TrustForwardedProto = f.Security.TrustForwardedProto
	c.Security.MaxConnections = f.Security.MaxConnections
	parseDur("security.body_timeout", f.Security.BodyTimeout, &c.Security.BodyTimeout)
	parseDur("security.public_body_timeout", f.Security.PublicBodyTimeout, &c.Security.PublicBodyTimeout)
}

func (c *Config) setSecurityDefaults() {
	if c.Audit.Retention == 0 {
		c.Audit.Retention = DefaultAuditRetention
	}
	if c.Security.MaxConnections == 0 {
		c.Security.MaxConnections = DefaultMaxConnections
	}
	if c.Security.BodyTimeout == 0 {
		c.Security.BodyTimeout = DefaultBodyTimeout
	}
	if c.Security.PublicBodyTimeout == 0 {
		c.Security.PublicBodyTimeout = DefaultPublicBodyTimeout
	}
}

// SecureCookies reports whether the dashboard is reached over https, so
// its cookies must be Secure whatever the request looks like here.
func (c *Config) SecureCookies() bool {
	return strings.HasPrefix(strings.ToLower(c.PublicURL), "https://") || c.TLSCertFile != ""
}

func (c *Config) validateSecurity() []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &fieldError{path: path, problem: fmt.Sprintf(format, args...)})
	}
	switch {
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		bad("tls_cert_file", "tls_cert_file and tls_key_file go together: set both to serve TLS, or neither")
	case c.TLSCertFile != "":
		for _, f := range []struct{ path, file string }{{"tls_cert_file", c.TLSCertFile}, {"tls_key_file", c.TLSKeyFile}} {
			if _, err := os.Stat(f.file); err != nil {
				bad(f.path, "cannot read %s: %v", f.file, err)
			}
		}
	}
	if c.Audit.Retention < 0 {
		bad("audit.retention", "must not be negative, got %s", c.Audit.Retention)
	}
	if c.Security.MaxConnections < 0 {
		bad("security.max_connections", "must be positive, got %d", c.Security.MaxConnections)
	}
	for _, d := range []struct {
		path  string
		value time.Duration
	}{
		{"security.body_timeout", c.Security.BodyTimeout},
		{"security.public_body_timeout", c.Security.PublicBodyTimeout},
	} {
		if d.value < 0 {
			bad(d.path, "must be positive, got %s", d.value)
		}
	}
	for i, p := range c.Providers {
		for _, h := range p.AllowResponseHeaders {
			if h == "" || strings.ContainsAny(h, " :\t\r\n") || http.CanonicalHeaderKey(h) == "" {
				bad(fmt.Sprintf("providers[%d].allow_response_headers", i), "%q is not a header name", h)
			}
		}
	}
	return errs
}
