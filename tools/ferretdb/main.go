// Command ferretdb starts FerretDB v1 (a MongoDB-wire-compatible server by
// FerretDB Inc., SQLite backend) for the project's tests, demo and benchmark.
//
// Why a launcher of our own instead of FerretDB's cmd/ferretdb: a binary built
// from that package with `go install …@v1.24.2` (or `go build` as a dependency)
// panics at start, because its version check wants build/version/version.txt,
// which only FerretDB's release tooling generates. FerretDB's embeddable
// package (github.com/FerretDB/FerretDB/ferretdb) is the same server without
// that check, with telemetry off, no debug HTTP listener and no state file,
// which is what parallel tests want anyway. All server code is FerretDB's,
// taken from the Go module proxy at the version in go.mod.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// ferretVersion is the FerretDB module version this binary was built with.
func ferretVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/FerretDB/FerretDB" {
				return m.Version
			}
		}
	}
	return "unknown"
}

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "listen TCP address")
	unix := flag.String("listen-unix", "", "listen Unix domain socket path")
	tlsAddr := flag.String("listen-tls", "", "listen TLS address (off when empty)")
	tlsCert := flag.String("listen-tls-cert-file", "", "TLS listener: server certificate (PEM)")
	tlsKey := flag.String("listen-tls-key-file", "", "TLS listener: server key (PEM)")
	tlsCA := flag.String("listen-tls-ca-file", "", "TLS listener: CA of the client certificates it then requires (PEM)")
	sqlite := flag.String("sqlite-url", "file:data/", "SQLite URI (a directory, ending in /)")
	level := flag.String("log-level", "warn", "debug, info, warn or error")
	version := flag.Bool("version", false, "print the FerretDB version and exit")
	flag.Parse()

	if *version {
		fmt.Println("FerretDB " + ferretVersion() + " (sqlite)")
		return
	}

	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb: bad --log-level:", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{
			TCP:         *listen,
			Unix:        *unix,
			TLS:         *tlsAddr,
			TLSCertFile: *tlsCert,
			TLSKeyFile:  *tlsKey,
			TLSCAFile:   *tlsCA,
		},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: *sqlite,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	logger.Info("FerretDB "+ferretVersion()+" listening", "addr", *listen, "tls", *tlsAddr, "sqlite", *sqlite)
	if err := f.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
}
