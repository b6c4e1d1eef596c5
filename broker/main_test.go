package broker_test

import (
	"os"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }
