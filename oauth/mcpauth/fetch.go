package mcpauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// Limits of every fetch made for discovery and registration.
const (
	// DefaultTimeout bounds one request, connection and body included.
	DefaultTimeout = 15 * time.Second
	// MaxDocument is the most of a metadata or registration document read;
	// these are a few KiB.
	MaxDocument = 256 << 10
	// maxRedirects bounds same-host redirects.
	maxRedirects = 3
)

// ErrHostRefused is wrapped by errors for URLs whose host the [HostPolicy]
// does not allow.
var ErrHostRefused = errors.New("mcpauth: host refused by policy")

// HostPolicy says which hosts URLs given by users and remote servers may
// point at. The zero value allows only public addresses over https: a URL
// an MCP server hands out must not be a way to reach the broker's own
// network (server-side request forgery).
type HostPolicy struct {
	// AllowPrivate allows loopback, private (RFC 1918, RFC 4193),
	// link-local and other non-public addresses, and plain http to
	// loopback addresses. For tests and deployments inside one network.
	AllowPrivate bool
}

// CheckURL checks that raw is an absolute URL this policy lets a client
// fetch: https, or http to a loopback host when private addresses are
// allowed; no user info or fragment. It does not resolve names; the
// client of [NewHTTPClient] checks each address it connects to.
func (p HostPolicy) CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("mcpauth: %.200q is not a URL: %w", raw, err)
	}
	if u.Host == "" || !u.IsAbs() {
		return nil, fmt.Errorf("mcpauth: %.200q is not an absolute URL", raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("mcpauth: %.200q has user info", raw)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("mcpauth: %.200q has a fragment", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !p.AllowPrivate || !isLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("%w: %.200q: plain http is accepted only for loopback hosts with private addresses allowed (mcp: allow_private_addresses)", ErrHostRefused, raw)
		}
	default:
		return nil, fmt.Errorf("mcpauth: %.200q: scheme must be https", raw)
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && !p.allows(ip) {
		return nil, fmt.Errorf("%w: %.200q is a private or loopback address; set mcp: allow_private_addresses to reach it", ErrHostRefused, raw)
	}
	return u, nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
}

// allows reports whether the policy lets a client connect to ip.
func (p HostPolicy) allows(ip netip.Addr) bool {
	if p.AllowPrivate {
		return true
	}
	ip = ip.Unmap()
	return ip.IsGlobalUnicast() && !ip.IsPrivate() &&
		// 100.64.0.0/10, carrier-grade NAT, is not public either.
		!netip.MustParsePrefix("100.64.0.0/10").Contains(ip)
}

// NewHTTPClient returns a client for fetching documents and calling
// endpoints at URLs that came from outside: it connects only to addresses
// policy allows (checked on the resolved address, so a name that resolves to
// a private address is refused too), follows at most a few redirects and
// only within the same scheme and host, and gives up after timeout
// ([DefaultTimeout] when zero). base supplies the transport settings
// (proxy, TLS); nil means a clone of http.DefaultTransport.
func NewHTTPClient(policy HostPolicy, timeout time.Duration, base *http.Transport) *http.Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	var tr *http.Transport
	if base != nil {
		tr = base.Clone()
	} else {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	// A proxy would hide the address actually reached.
	tr.Proxy = nil
	dialer := &net.Dialer{
		Timeout: timeout,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: cannot parse address %q", ErrHostRefused, address)
			}
			if !policy.allows(ap.Addr()) {
				return fmt.Errorf("%w: %s is a private or loopback address; set mcp: allow_private_addresses to reach it", ErrHostRefused, ap.Addr())
			}
			return nil
		},
	}
	tr.DialContext = dialer.DialContext
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("mcpauth: more than %d redirects", maxRedirects)
			}
			first := via[0].URL
			if req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
				return fmt.Errorf("mcpauth: refusing redirect from %s to another host or scheme (%s://%s)", first.Host, req.URL.Scheme, req.URL.Host)
			}
			return nil
		},
	}
}

// readDocument reads at most MaxDocument bytes of body.
func readDocument(body io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(body, MaxDocument+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxDocument {
		return nil, fmt.Errorf("document larger than %d bytes", MaxDocument)
	}
	return b, nil
}

// get fetches a JSON document.
func get(ctx context.Context, client *http.Client, u string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := readDocument(resp.Body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("reading %s: %w", u, err)
	}
	return resp.StatusCode, resp.Header, b, nil
}
