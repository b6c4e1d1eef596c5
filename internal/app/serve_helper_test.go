package app_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
)

// served is an app serving the API, as `serve` runs it.
type served struct {
	a    *app.App
	base string // http://127.0.0.1:port
	key  string // the bootstrap admin key; "" when keys existed already
	// stop ends serving and closes the app; it returns ServeListener's error.
	stop func() error
}

// serveApp builds the app for the config file at cfgPath, creates the
// bootstrap admin key (dated now), and serves on ln, or on a fresh
// 127.0.0.1 port when ln is nil, until stop.
func serveApp(t testing.TB, cfgPath string, ln net.Listener, opts app.Options, now time.Time) served {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := a.BootstrapAPIKey(context.Background(), &out, now); err != nil {
		t.Fatal(err)
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ServeListener(ctx, ln, nil) }()
	return served{
		a: a, base: "http://" + ln.Addr().String(), key: keyRe.FindString(out.String()),
		stop: func() error {
			cancel()
			err := <-done
			a.Close()
			return err
		},
	}
}
