package rig

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"k8s.io/klog/v2"
)

// Rigs that stop themselves on SIGINT/SIGTERM. One handler serves them all: on the first signal it
// stops every registered rig and exits the process with 128+signal; a second signal exits at once
// (the kernel still kills every child, see process.go).
var (
	sigMu   sync.Mutex
	sigRigs = map[*Rig]bool{}
	sigOnce sync.Once
)

func handleSignals(r *Rig) {
	sigMu.Lock()
	sigRigs[r] = true
	sigMu.Unlock()
	sigOnce.Do(func() {
		ch := make(chan os.Signal, 2)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		go func() {
			sig := <-ch
			sigMu.Lock()
			rigs := make([]*Rig, 0, len(sigRigs))
			for r := range sigRigs {
				rigs = append(rigs, r)
			}
			sigMu.Unlock()
			go func() {
				<-ch
				fmt.Fprintln(os.Stderr, "rig: second signal; exiting now")
				os.Exit(exitCode(sig))
			}()
			if len(rigs) > 0 {
				fmt.Fprintf(os.Stderr, "rig: %v: stopping the rig\n", sig)
			}
			var wg sync.WaitGroup
			for _, r := range rigs {
				wg.Go(r.Stop)
			}
			wg.Wait()
			os.Exit(exitCode(sig))
		}()
	})
}

func unregisterSignals(r *Rig) {
	sigMu.Lock()
	delete(sigRigs, r)
	sigMu.Unlock()
}

// Interrupted is the cancellation cause of an InterruptContext context: the signal that arrived.
type Interrupted struct{ Signal os.Signal }

func (i Interrupted) Error() string { return "interrupted by " + i.Signal.String() }

// ExitCode is 128+signal, the status a shell reports for a command ended by that signal.
func (i Interrupted) ExitCode() int { return exitCode(i.Signal) }

// InterruptedBy returns the signal that canceled ctx, if an InterruptContext's signal did.
func InterruptedBy(ctx context.Context) (Interrupted, bool) {
	var i Interrupted
	ok := errors.As(context.Cause(ctx), &i)
	return i, ok
}

// InterruptContext is for a command that starts a rig with Options.NoSignalHandler so that it can
// clean up and say what happened rather than exit at once: the context it returns is canceled, with
// cause Interrupted, on the first SIGINT or SIGTERM, after notify (if not nil) is called with the
// signal. The first signal also restores the default handling, so a second one kills the process at
// once (the rig's processes die with it: process.go). stop releases the handler and the context.
func InterruptContext(parent context.Context, notify func(os.Signal)) (ctx context.Context, stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancelCause(parent)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			signal.Reset(os.Interrupt, syscall.SIGTERM)
			if notify != nil {
				notify(sig)
			}
			cancel(Interrupted{sig})
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel(nil)
		})
	}
}

func exitCode(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

var (
	klogMu   sync.Mutex
	klogFile *os.File
)

// redirectKlog sends klog output of this process (client-go and the provisioner library used by the
// in-process components) to path instead of stderr, so test output stays readable. The last rig
// started in a process wins.
func redirectKlog(path string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	klogMu.Lock()
	defer klogMu.Unlock()
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	klog.InitFlags(fs)
	fs.Set("logtostderr", "false")
	fs.Set("alsologtostderr", "false")
	fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(f)
	if klogFile != nil {
		klogFile.Close()
	}
	klogFile = f
}
