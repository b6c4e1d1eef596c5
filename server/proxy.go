package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/client"
	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/store"
)

// proxyPrefix is the fixed part of the proxy route's path; the connection
// id and the provider path follow.
const proxyPrefix = "/v1/proxy/"

// maxRefreshOn bounds the statuses a Refresh-On header may list.
const maxRefreshOn = 10

// droppedHeaders (canonical names) are the caller's headers that must not reach the provider:
// the caller's credentials for tokenbroker (the provider gets its own
// token), and anything that would tell the provider about the caller.
var droppedHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Refresh-On", "X-Real-Ip"}

func (s *Server) proxy(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	// The token names the provider: one (usually cached) lookup routes the
	// call and authorizes it.
	first, err := s.broker.GetToken(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if first.Provider == store.ProviderMCP {
		s.proxyMCP(w, r, id, first)
		return
	}
	target, ok := s.targets[first.Provider]
	if !ok {
		s.writeError(w, r, invalid("provider "+first.Provider+" has no api_base_url"))
		return
	}
	upstream, err := upstreamURL(target.BaseURL, r.URL)
	if err != nil {
		s.writeError(w, r, invalid(err.Error()))
		return
	}
	refreshOn, err := parseRefreshOn(r.Header.Values("Refresh-On"))
	if err != nil {
		s.writeError(w, r, invalid(err.Error()))
		return
	}
	invalidToken := refreshOn == nil && target.RefreshOnInvalidToken
	if refreshOn == nil {
		refreshOn = target.RefreshOn // nil there too means {401}
	}
	if err := s.bufferBody(r); err != nil {
		s.writeError(w, r, invalid("could not read the request body"))
		return
	}

	s.beginProxyCall(r, upstream, id, first, client.Transport{
		Base:      s.proxyTransport,
		RefreshOn: refreshOn,
		// The provider's statuses are its stale signal, and with
		// refresh_on_invalid_token also a challenge that says
		// invalid_token (docs/mcp.md); a step-up challenge goes back to
		// the caller as it came.
		IgnoreInvalidToken:    !invalidToken,
		PassInsufficientScope: true,
	})
	target.rp.ServeHTTP(w, r)
}

// beginProxyCall records on r the call the shared ReverseProxy makes next:
// to upstream, with connection id's token (first, already fetched), sent
// through t with the connection as its token source.
func (s *Server) beginProxyCall(r *http.Request, upstream *url.URL, id string, first broker.Token, t client.Transport) {
	call := &proxyCall{
		upstream: upstream,
		source:   connectionSource{broker: s.broker, id: id, first: first, haveFirst: true},
	}
	t.Source = &call.source
	call.transport = t
	info(r.Context()).proxy = call
}

// proxyCall is what differs between two proxied calls through one
// provider: where the call goes and the connection whose token it
// carries, with the Refresh-On statuses. It travels in the request's
// requestInfo, so that one ReverseProxy and one transport per provider
// serve every call (newReverseProxy) instead of a new pair per request.
type proxyCall struct {
	upstream  *url.URL
	source    connectionSource
	transport client.Transport
}

// callOf returns the call state the proxy handler put on the request.
func callOf(r *http.Request) (*proxyCall, error) {
	if c := info(r.Context()).proxy; c != nil {
		return c, nil
	}
	return nil, errors.New("server: proxied request has no call state")
}

// newReverseProxy builds the ReverseProxy shared by every call to one
// provider (or to MCP servers). modify, if set, sees each response.
// flush is ReverseProxy's FlushInterval: 0 flushes text/event-stream
// answers and answers of unknown length after every write, as they come;
// -1 flushes every answer so.
func (s *Server) newReverseProxy(flush time.Duration, modify func(*http.Response) error) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		// Rewrite (not Director): the inbound Forwarded and X-Forwarded-*
		// headers are removed, and no SetXForwarded: the provider learns
		// nothing about our callers' addresses.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.Host = "" // the target's host, from the URL
			for _, h := range droppedHeaders {
				delete(pr.Out.Header, h) // canonical already: Del would canonicalise again
			}
			if c, err := callOf(pr.In); err == nil {
				pr.Out.URL = c.upstream
			}
		},
		Transport:      callTransport{},
		FlushInterval:  flush,
		ModifyResponse: modify,
		ErrorHandler:   s.proxyError,
		ErrorLog:       s.proxyLog,
		BufferPool:     copyBuffers,
	}
}

// callTransport sends a proxied request with its call's transport, which
// adds the connection's token and refreshes it on a stale answer.
type callTransport struct{}

func (callTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c, err := callOf(req)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return c.transport.RoundTrip(req)
}

// copyBuffers lends ReverseProxy its 32 KiB copy buffers, which it would
// otherwise allocate for every response (BENCHMARKS.md, "Allocations per
// request").
var copyBuffers = &bufferPool{}

type bufferPool struct{ p sync.Pool }

const copyBufferSize = 32 << 10

func (b *bufferPool) Get() []byte {
	if p, ok := b.p.Get().(*[]byte); ok {
		return *p
	}
	return make([]byte, copyBufferSize)
}

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != copyBufferSize {
		return
	}
	buf = buf[:copyBufferSize]
	b.p.Put(&buf)
}

// bufferBody keeps a body of up to maxReplay bytes in memory so that the
// request can be replayed after a refresh. A larger body streams through
// once: GetBody stays nil, so it is not retried.
func (s *Server) bufferBody(r *http.Request) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		r.GetBody = nil
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, s.maxReplay+1))
	if err != nil {
		return err
	}
	if int64(len(buf)) > s.maxReplay {
		r.Body = &prefixedBody{Reader: io.MultiReader(bytes.NewReader(buf), r.Body), Closer: r.Body}
		r.GetBody = nil
		return nil
	}
	r.Body.Close()
	r.ContentLength = int64(len(buf))
	r.TransferEncoding = nil // the length is known now: no need to chunk
	if len(buf) == 0 {
		r.Body, r.GetBody = http.NoBody, nil
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return nil
}

type prefixedBody struct {
	io.Reader
	io.Closer
}

// proxyError answers for a proxied call that produced no response.
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	var se *sourceError
	switch {
	case errors.As(err, &se):
		// The token could not be had or renewed: say why in our terms
		// (reauth_required, provider_unavailable), never with the
		// provider's stale 401.
		s.fail(w, r, se.err)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		info(r.Context()).errCode = errCodeCanceled // the caller has gone
	default:
		s.log.WarnContext(r.Context(), "proxied request failed", "route", info(r.Context()).pattern,
			"connection", info(r.Context()).connection, "error", upstreamErrorKind(err))
		s.writeError(w, r, apiError{status: http.StatusBadGateway, code: codeBadGateway,
			message: "the provider's API could not be reached"})
	}
}

// upstreamErrorKind describes a transport error for the log without its
// text, which names the upstream URL (and so the caller's path and query).
func upstreamErrorKind(err error) string {
	var ue *url.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ue) && ue.Timeout():
		return "timeout"
	case errors.As(err, &ue):
		return fmt.Sprintf("%T", ue.Err)
	}
	return fmt.Sprintf("%T", err)
}

// connectionSource is a [client.Source] over one connection of the broker.
type connectionSource struct {
	broker Broker
	id     string
	// first is the token the proxy already fetched to route the call;
	// the first Token call hands it out instead of fetching it again.
	first     broker.Token
	haveFirst bool
}

// sourceError marks an error of the token source, so that the proxy's error
// handler can tell it from the provider API being unreachable.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

func (cs *connectionSource) Token(ctx context.Context) (*oauth.Token, error) {
	if cs.haveFirst {
		cs.haveFirst = false
		return toOAuth(cs.first), nil
	}
	t, err := cs.broker.GetToken(ctx, cs.id)
	if err != nil {
		return nil, &sourceError{err}
	}
	return toOAuth(t), nil
}

func (cs *connectionSource) Refresh(ctx context.Context, stale *oauth.Token) (*oauth.Token, error) {
	var staleAccess *string
	if stale != nil {
		staleAccess = &stale.AccessToken
	}
	t, err := cs.broker.RefreshConnection(ctx, cs.id, staleAccess)
	if err != nil {
		return nil, &sourceError{err}
	}
	return toOAuth(t), nil
}

func toOAuth(t broker.Token) *oauth.Token {
	return &oauth.Token{AccessToken: t.AccessToken, TokenType: t.TokenType, Expiry: t.ExpiresAt, Scope: t.Scope}
}

// parseRefreshOn reads the Refresh-On request header: a comma-separated
// list of 4xx statuses. Only 4xx: a caller must not be able to make every
// successful call (or a provider outage) spend a refresh. No header: nil.
func parseRefreshOn(values []string) ([]int, error) {
	if len(values) == 0 {
		return nil, nil
	}
	var out []int
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			n, err := strconv.Atoi(f)
			if err != nil || n < 400 || n > 499 || len(f) != 3 {
				return nil, errors.New("Refresh-On: must list HTTP statuses from 400 to 499, such as 401,403")
			}
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("Refresh-On: is empty; list statuses such as 401,403")
	}
	if len(out) > maxRefreshOn {
		return nil, fmt.Errorf("Refresh-On: lists more than %d statuses", maxRefreshOn)
	}
	return out, nil
}

// checkBaseURL accepts an absolute http(s) URL with a host and nothing that
// would confuse joining paths under it.
func checkBaseURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an http or https URL")
	}
	if u.Host == "" {
		return errors.New("has no host")
	}
	if u.User != nil {
		return errors.New("must not carry credentials")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not have a query or fragment")
	}
	return nil
}

// upstreamURL joins the proxied part of the request's path under base's
// path, and carries the query over. The path was checked by
// checkRequestPath; the part after the connection id is checked again here
// so that the function is safe on its own: it cannot produce a URL on
// another host or above base's path.
func upstreamURL(base *url.URL, in *url.URL) (*url.URL, error) {
	escaped := in.EscapedPath()
	rest, ok := strings.CutPrefix(escaped, proxyPrefix)
	if !ok {
		return nil, errors.New("not a proxy path")
	}
	// Skip the connection id segment.
	_, tail, ok := strings.Cut(rest, "/")
	if !ok {
		return nil, errors.New("path must be /v1/proxy/{id}/{path}")
	}
	var decoded []string
	if tail != "" {
		segs := strings.Split(tail, "/")
		decoded = make([]string, len(segs))
		for i, seg := range segs {
			if seg == "" && i != len(segs)-1 {
				return nil, errors.New("path has an empty segment")
			}
			d, err := checkSegment(seg)
			if err != nil {
				return nil, err
			}
			decoded[i] = d
		}
	}
	basePath := strings.TrimSuffix(base.Path, "/")
	baseRaw := strings.TrimSuffix(base.EscapedPath(), "/")
	u := &url.URL{
		Scheme:   base.Scheme,
		Host:     base.Host,
		Path:     basePath + "/" + strings.Join(decoded, "/"),
		RawPath:  baseRaw + "/" + tail,
		RawQuery: in.RawQuery,
	}
	if u.EscapedPath() != u.RawPath {
		// Path and RawPath disagree: an encoding net/url does not accept.
		return nil, errors.New("path has an invalid percent-encoding")
	}
	return u, nil
}
