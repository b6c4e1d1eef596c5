package server

import (
	"net"
	"net/http"
	"sync"
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

// setReadDeadline bounds the time left to read the request (its body) on
// the wall clock: a socket deadline, not the injected clock. net/http
// resets it for the next request on the connection. Writers that are not a
// connection (tests' recorders) ignore it.
func (s *Server) setReadDeadline(w http.ResponseWriter, d time.Duration) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
}

// extendReadDeadline gives a request that showed a valid key the longer
// body deadline.
func (s *Server) extendReadDeadline(w http.ResponseWriter) {
	s.setReadDeadline(w, s.limits.BodyTimeout)
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
