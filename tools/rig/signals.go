package rig

import (
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
