package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CertReloader serves a certificate and key from files and reloads them
// when either file changes, so a renewed certificate (certbot, cert-manager)
// is picked up without a restart. A pair that fails to load keeps the last
// good one in service and is logged. Create it with [NewCertReloader] and
// put its GetCertificate in a tls.Config.
type CertReloader struct {
	certFile, keyFile string
	// checkEvery spaces the stat calls that look for a change.
	checkEvery time.Duration
	log        *slog.Logger

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     fileStamp
	lastCheck time.Time
}

type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// NewCertReloader loads the pair once, failing if it cannot, and checks the
// files for changes at most every checkEvery (0: on every handshake).
func NewCertReloader(certFile, keyFile string, checkEvery time.Duration, log *slog.Logger) (*CertReloader, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("server: TLS needs both a certificate file and a key file")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, checkEvery: checkEvery, log: log}
	st, err := r.statFiles()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server: load TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	r.cert, r.stamp, r.lastCheck = &cert, st, time.Now()
	return r, nil
}

func (r *CertReloader) statFiles() (fileStamp, error) {
	c, err := os.Stat(r.certFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("server: TLS certificate: %w", err)
	}
	k, err := os.Stat(r.keyFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("server: TLS key: %w", err)
	}
	return fileStamp{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

// GetCertificate returns the current certificate, reloading it first if
// the files changed since it was loaded.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.lastCheck) < r.checkEvery {
		return r.cert, nil
	}
	r.lastCheck = now
	st, err := r.statFiles()
	if err != nil || st == r.stamp {
		if err != nil {
			r.log.Warn("TLS certificate files unreadable; serving the loaded certificate", "error", err)
		}
		return r.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// Often a renewal caught between writing the certificate and the
		// key: the next check tries again.
		r.log.Warn("TLS certificate changed but does not load; serving the previous one", "error", err)
		return r.cert, nil
	}
	r.cert, r.stamp = &cert, st
	r.log.Info("TLS certificate reloaded", "cert_file", r.certFile)
	return r.cert, nil
}

// TLSConfig returns a server TLS configuration serving r's certificate,
// TLS 1.2 at least.
func (r *CertReloader) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
}
