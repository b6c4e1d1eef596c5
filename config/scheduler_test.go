package config

import (
	"strings"
	"testing"
	"time"
)

func TestSchedulerSection(t *testing.T) {
	c, err := Load(writeConfig(t, "scheduler:\n  interval: 250ms\n  concurrency: 3\n  batch_size: 40\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := SchedulerConfig{Interval: 250 * time.Millisecond, Concurrency: 3, BatchSize: 40}
	if c.Scheduler != want {
		t.Errorf("scheduler = %+v, want %+v", c.Scheduler, want)
	}
	c, err = Load(writeConfig(t, "scheduler:\n  disabled: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Scheduler.Disabled || c.Scheduler.Interval != DefaultSchedulerInterval {
		t.Errorf("scheduler = %+v, want disabled with default interval", c.Scheduler)
	}

	for _, tc := range []struct{ name, yaml, want string }{
		{"interval", "scheduler:\n  interval: often\n", `scheduler.interval: "often" is not a duration`},
		{"negative interval", "scheduler:\n  interval: -1s\n", "scheduler.interval: must be positive, got -1s"},
		{"negative concurrency", "scheduler:\n  concurrency: -2\n", "scheduler.concurrency: must be positive, got -2"},
		{"negative batch", "scheduler:\n  batch_size: -1\n", "scheduler.batch_size: must be positive, got -1"},
		{"unknown field", "scheduler:\n  workers: 3\n", `scheduler.workers: unknown setting (known here: disabled, interval, concurrency, batch_size)`},
	} {
		err := loadAndValidate(t, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
}
