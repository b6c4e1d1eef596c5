package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/bench/load"
)

// benchStorm: a connection whose access token has expired, N concurrent
// callers, on one SQLite process and on three PostgreSQL replicas. Every
// caller's wait is measured from the moment it sends its request until it
// holds the new token; each storm is also split around the provider's own
// refresh (when the request reached it, when it answered) so the report
// says where the time above the provider's latency goes.
func benchStorm(args []string) error {
	var (
		pgDSN   string
		callers int
		latency time.Duration
	)
	o, err := parse("storm", args, func(fs *flag.FlagSet) {
		fs.StringVar(&pgDSN, "pg", "", "PostgreSQL database for the three-replica run (postgres://…)")
		fs.IntVar(&callers, "callers", 300, "concurrent callers per storm")
		fs.DurationVar(&latency, "latency", 20*time.Millisecond, "the provider's token endpoint latency")
	})
	if err != nil {
		return err
	}
	if o.rounds < 20 {
		o.rounds = 20
	}
	up, err := start(nil, self(), "serve-upstream", "-latency", latency.String())
	if err != nil {
		return err
	}
	defer up.stop()
	c := load.Client(callers)

	type setup struct {
		name  string
		addrs []string
		key   string
	}
	var setups []setup
	sq, key, cleanup, err := startBroker(o.bin, up.addr, brokerOpts{wantKey: true})
	if err != nil {
		return err
	}
	defer cleanup()
	setups = append(setups, setup{"SQLite, 1 process", []string{sq.addr}, key})
	if pgDSN != "" {
		keysDir, err := os.MkdirTemp("", "tbbench-keys-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(keysDir)
		keys := filepath.Join(keysDir, "keys")
		var addrs []string
		var pgKey string
		for i := range 3 {
			p, k, cl, err := startBroker(o.bin, up.addr, brokerOpts{database: pgDSN, keysFile: keys, wantKey: i == 0})
			if err != nil {
				return err
			}
			defer cl()
			if i == 0 {
				pgKey = k
			}
			addrs = append(addrs, p.addr)
		}
		setups = append(setups, setup{"PostgreSQL, 3 replicas", addrs, pgKey})
	}
	fmt.Printf("Storm: %d concurrent GET …/token on an expired token, provider latency %v, %d storms per setup\n", callers, latency, o.rounds)
	for _, st := range setups {
		s := storm{c: c, upstream: up.addr, addrs: st.addrs, key: st.key, callers: callers}
		// Open every caller's keep-alive connection first: the storm
		// measures waiting for a refresh, not TCP handshakes. The same
		// burst on a valid token is the floor a storm is compared with:
		// what 300 concurrent requests cost on this machine with no
		// refresh to wait for.
		valid, body, err := s.warm(o.rounds)
		if err != nil {
			return err
		}
		bare, err := bareBursts(s, body, o.rounds)
		if err != nil {
			return err
		}
		before, err := getStats(c, up.addr)
		if err != nil {
			return err
		}
		var (
			waits                  []time.Duration
			toProvider, afterReply []time.Duration
			bad                    int
		)
		for round := range o.rounds {
			r, err := s.run(fmt.Sprintf("storm-%d-%d", time.Now().UnixNano(), round))
			if err != nil {
				return err
			}
			waits = append(waits, r.waits...)
			bad += r.bad
			toProvider = append(toProvider, r.toProvider)
			afterReply = append(afterReply, r.lastAfterReply)
		}
		after, err := getStats(c, up.addr)
		if err != nil {
			return err
		}
		slices.Sort(waits)
		slices.Sort(toProvider)
		slices.Sort(afterReply)
		w := load.Result{Latencies: waits}
		tp, ar := load.Result{Latencies: toProvider}, load.Result{Latencies: afterReply}
		fmt.Printf("  %-24s provider refreshes %d for %d storms (reuse %d)  wait p50 %.1fms p99 %.1fms max %.1fms  failed callers or split storms %d\n",
			st.name, after.Refreshes-before.Refreshes, o.rounds, after.Reuse-before.Reuse,
			ms(w.Quantile(0.5)), ms(w.Quantile(0.99)), ms(w.Quantile(1)), bad)
		fmt.Printf("  %-24s release → provider gets the refresh: median %.1fms max %.1fms; provider answers → last caller served: median %.1fms max %.1fms\n",
			"", ms(tp.Quantile(0.5)), ms(tp.Quantile(1)), ms(ar.Quantile(0.5)), ms(ar.Quantile(1)))
		fmt.Printf("  %-24s the same bursts on a valid token (no refresh): wait p50 %.1fms p99 %.1fms max %.1fms\n",
			"", ms(valid.Quantile(0.5)), ms(valid.Quantile(0.99)), ms(valid.Quantile(1)))
		fmt.Printf("  %-24s the same bursts on a bare net/http handler, same bytes: wait p50 %.1fms p99 %.1fms max %.1fms\n",
			"", ms(bare.Quantile(0.5)), ms(bare.Quantile(0.99)), ms(bare.Quantile(1)))
	}
	return nil
}

type storm struct {
	c        *http.Client
	upstream string
	addrs    []string
	key      string
	callers  int
}

type stormResult struct {
	waits []time.Duration
	bad   int
	// toProvider: from the release of the callers until the provider
	// received the refresh; lastAfterReply: from the provider's answer
	// until the last caller held the token.
	toProvider, lastAfterReply time.Duration
}

// importExpired imports a fresh grant from the provider under id, its
// access token already expired (or, with fresh set, valid for an hour).
func (s storm) importConnection(id string, fresh bool) error {
	resp, err := s.c.Post("http://"+s.upstream+"/issue", "", nil)
	if err != nil {
		return err
	}
	var grant map[string]string
	json.NewDecoder(resp.Body).Decode(&grant)
	resp.Body.Close()
	exp := time.Now().Add(-time.Minute)
	if fresh {
		exp = time.Now().Add(time.Hour)
	}
	body, _ := json.Marshal(map[string]any{"id": id, "provider": "bench",
		"access_token": grant["access_token"], "refresh_token": grant["refresh_token"],
		"expires_at": exp.UTC().Format(time.RFC3339)})
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addrs[0]+"/v1/connections", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err = s.c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("import: %s", resp.Status)
	}
	return nil
}

// warm opens the callers' connections with three concurrent rounds of
// reads of a valid token, then measures rounds more such bursts. It also
// returns the token response's body, for the bare handler to serve.
func (s storm) warm(rounds int) (load.Result, []byte, error) {
	id := fmt.Sprintf("storm-warm-%d", time.Now().UnixNano())
	if err := s.importConnection(id, true); err != nil {
		return load.Result{}, nil, err
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.addrs[0]+"/v1/connections/"+id+"/token", nil)
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := s.c.Do(req)
	if err != nil {
		return load.Result{}, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return load.Result{}, nil, err
	}
	res, err := s.bursts(id, rounds)
	return res, body, err
}

// bursts fires three unmeasured bursts at id, then rounds measured ones.
func (s storm) bursts(id string, rounds int) (load.Result, error) {
	var waits []time.Duration
	for i := range 3 + rounds {
		r := s.fire(id)
		if r.bad > 0 {
			return load.Result{}, fmt.Errorf("burst without a refresh: %d of %d reads failed", r.bad, s.callers)
		}
		if i >= 3 {
			waits = append(waits, r.waits...)
		}
	}
	slices.Sort(waits)
	return load.Result{Latencies: waits}, nil
}

// bareBursts fires the same bursts at a bare net/http handler serving body:
// what 300 concurrent requests cost on this machine with nothing behind
// them, the floor for both the storms and the bursts on a valid token.
func bareBursts(s storm, body []byte, rounds int) (load.Result, error) {
	f, err := os.CreateTemp("", "tbbench-body-")
	if err != nil {
		return load.Result{}, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(body); err != nil {
		return load.Result{}, err
	}
	f.Close()
	bare, err := start(nil, self(), "serve-static", "-body", f.Name())
	if err != nil {
		return load.Result{}, err
	}
	defer bare.stop()
	s.addrs = []string{bare.addr}
	return s.bursts("bare", rounds)
}

func (s storm) run(id string) (stormResult, error) {
	if err := s.importConnection(id, false); err != nil {
		return stormResult{}, err
	}
	r := s.fire(id)
	st, err := getStats(s.c, s.upstream)
	if err != nil {
		return stormResult{}, err
	}
	r.toProvider = time.Duration(st.LastRecv - r.released.UnixNano())
	r.lastAfterReply = time.Duration(r.last.UnixNano() - st.LastSent)
	return r.stormResult, nil
}

type fired struct {
	stormResult
	released, last time.Time
}

// fire releases s.callers concurrent token reads of id, round-robin over
// the replicas, and checks that they all got the same token.
func (s storm) fire(id string) fired {
	var (
		mu     sync.Mutex
		r      fired
		tokens = map[string]int{}
		wg     sync.WaitGroup
		start  = make(chan struct{})
	)
	for i := range s.callers {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.addrs[i%len(s.addrs)]+"/v1/connections/"+id+"/token", nil)
		req.Header.Set("Authorization", "Bearer "+s.key)
		wg.Go(func() {
			<-start
			t0 := time.Now()
			resp, err := s.c.Do(req)
			done := time.Now()
			var tok struct {
				AccessToken string `json:"access_token"`
			}
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&tok)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("%s", resp.Status)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.bad++
				return
			}
			tokens[tok.AccessToken]++
			r.waits = append(r.waits, done.Sub(t0))
			if done.After(r.last) {
				r.last = done
			}
		})
	}
	r.released = time.Now()
	close(start)
	wg.Wait()
	if len(tokens) != 1 {
		r.bad++
	}
	return r
}
