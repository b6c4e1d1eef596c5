package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bound what one request may cost before it is answered
// (docs/security.md, "Request deadlines"). Zero fields take the defaults.
type Limits struct {
	// PublicBodyTimeout is how long a request may take to send its body
	// until it has shown a valid API key: on public routes, the dashboard's
	// sign-in and every request refused for its key. Default 10s.
	PublicBodyTimeout time.Duration
	// BodyTimeout is how long a request with a valid API key may take to
	// send its body, proxied uploads included. Default 60s.
	BodyTimeout time.Duration
}

const (
	defaultPublicBodyTimeout = 10 * time.Second
	defaultBodyTimeout       = 60 * time.Second
)

func (l Limits) withDefaults() Limits {
	if l.PublicBodyTimeout <= 0 {
		l.PublicBodyTimeout = defaultPublicBodyTimeout
	}
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = defaultBodyTimeout
	}
	return l
}

// bodyDeadline bounds the time a request may take to send its body. The
// deadline is a socket read deadline on the wall clock (not the injected
// clock), and it must only cover the body: net/http keeps reading the
// connection in the background once the body is done, and a deadline
// expiring then would cancel the request's context, cutting off a long
// proxied call or a slow refresh. So it is only set for a request with a
// body, and cleared as soon as the body ends. A body that fails (too slow,
// cut off) instead gets a deadline in the past, so that net/http does not
// wait for the rest of it to drain the connection. net/http resets
// deadlines for the next request on the connection.
type bodyDeadline struct {
	io.ReadCloser
	rc   *http.ResponseController
	done atomic.Bool
}

func (b *bodyDeadline) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && b.done.CompareAndSwap(false, true) {
		if errors.Is(err, io.EOF) {
			_ = b.rc.SetReadDeadline(time.Time{})
		} else {
			_ = b.rc.SetReadDeadline(time.Now())
		}
	}
	return n, err
}

// set moves the deadline to d from now, unless the body has ended.
// Writers that are not a connection (tests' recorders) ignore it.
func (b *bodyDeadline) set(d time.Duration) {
	if !b.done.Load() {
		_ = b.rc.SetReadDeadline(time.Now().Add(d))
	}
}

type bodyDeadlineKey struct{}

// startBodyDeadline gives a request with a body the short deadline of
// unauthenticated requests, and returns the request whose body clears it.
func (s *Server) startBodyDeadline(w http.ResponseWriter, r *http.Request) *http.Request {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return r
	}
	b := &bodyDeadline{ReadCloser: r.Body, rc: http.NewResponseController(w)}
	b.set(s.limits.PublicBodyTimeout)
	r.Body = b
	return r.WithContext(context.WithValue(r.Context(), bodyDeadlineKey{}, b))
}

// abandonBody is for a request answered without its body (refused for
// its key or role): the body's deadline is moved to now, so that net/http,
// which would otherwise read up to 256 KiB of it before closing, gives up
// at once; the answer says Connection: close.
func (s *Server) abandonBody(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Connection", "close")
	if b, ok := r.Context().Value(bodyDeadlineKey{}).(*bodyDeadline); ok && b.done.CompareAndSwap(false, true) {
		_ = b.rc.SetReadDeadline(time.Now())
	}
}

// extendReadDeadline gives a request that showed a valid key the longer
// body deadline.
func (s *Server) extendReadDeadline(r *http.Request) {
	if b, ok := r.Context().Value(bodyDeadlineKey{}).(*bodyDeadline); ok {
		b.set(s.limits.BodyTimeout)
	}
}

// HTTPServer returns an http.Server for the API with the header, idle and
// header-size limits set; body deadlines are set per request (see
// [Limits]). No WriteTimeout: proxied responses may stream for long.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          s.proxyLog,
	}
}

// LimitListener accepts at most n connections at a time; further ones
// wait in the kernel's backlog until one closes. It keeps a flood of slow
// clients from using up the process's file descriptors, which would stop
// it from accepting anything, health checks included (docs/security.md).
func LimitListener(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
