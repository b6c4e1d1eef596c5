package server

import (
	"net/url"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/store/sqlite"
)

func TestNewValidates(t *testing.T) {
	// Typed nil pointers: New only checks that they are given.
	var b *broker.Broker
	var keys *sqlite.Store
	good, _ := url.Parse("https://api.example/v1")
	bad, _ := url.Parse("ftp://api.example")
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no broker", Options{Keys: keys}, "Broker"},
		{"no keys", Options{Broker: b}, "Keys"},
		{"bad base", Options{Broker: b, Keys: keys, Targets: map[string]ProxyTarget{"p": {BaseURL: bad}}}, `"p"`},
		{"bad refresh_on", Options{Broker: b, Keys: keys, Targets: map[string]ProxyTarget{"q": {BaseURL: good, RefreshOn: []int{42}}}}, "refresh_on"},
	}
	for _, c := range cases {
		if _, err := New(c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %s", c.name, err, c.want)
		}
	}
	if _, err := New(Options{Broker: b, Keys: keys, Targets: map[string]ProxyTarget{"p": {BaseURL: good, RefreshOn: []int{401, 403}}}}); err != nil {
		t.Errorf("valid options: %v", err)
	}
}
