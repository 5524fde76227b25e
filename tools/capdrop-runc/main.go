// capdrop-runc stands in for runc as a Docker runtime. Before `create`/`run`
// it removes from the bundle's config.json, and before `exec` from the
// --process spec, every capability this host's bounding set does not hold,
// then execs the real runc with the same arguments.
//
// Why: `--privileged` asks for every capability Docker knows; on a host (a VM,
// a sandbox) whose bounding set lacks one (e.g. CAP_SYS_RESOURCE), runc fails
// with "unable to apply caps: operation not permitted", and `--cap-drop` is
// ignored under `--privileged`. Dropping what the host cannot grant anyway
// changes nothing else.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

var version = "v0.0.0" // stamped at build time with -ldflags -X main.version=...

// Linux capability numbers (include/uapi/linux/capability.h).
var capNumbers = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
	"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

// runc's global flags that take a value in the next argument.
var valueFlags = map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true,
	"--rootless": true}

func main() {
	args := os.Args[1:]
	if len(args) == 1 && (args[0] == "--kindlab-version") {
		fmt.Println("capdrop-runc", version)
		return
	}
	if err := filterSpecs(args); err != nil {
		fmt.Fprintf(os.Stderr, "capdrop-runc: %v\n", err)
		os.Exit(1)
	}
	runc, err := realRunc()
	if err != nil {
		fmt.Fprintf(os.Stderr, "capdrop-runc: %v\n", err)
		os.Exit(1)
	}
	err = syscall.Exec(runc, append([]string{"runc"}, args...), os.Environ())
	fmt.Fprintf(os.Stderr, "capdrop-runc: exec %s: %v\n", runc, err)
	os.Exit(1)
}

// filterSpecs finds the spec file the runc subcommand will read and filters it.
func filterSpecs(args []string) error {
	sub, rest := subcommand(args)
	switch sub {
	case "create", "run":
		bundle := flagValue(rest, "--bundle", "-b")
		if bundle == "" {
			bundle = "."
		}
		return filterFile(filepath.Join(bundle, "config.json"), func(doc map[string]any) bool {
			process, _ := doc["process"].(map[string]any)
			return process != nil && filterCaps(process)
		})
	case "exec":
		if path := flagValue(rest, "--process", "-p"); path != "" {
			return filterFile(path, filterCaps)
		}
	}
	return nil
}

func subcommand(args []string) (string, []string) {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") {
			return arg, args[i+1:]
		}
		if !strings.Contains(arg, "=") && valueFlags[arg] {
			i++
		}
	}
	return "", nil
}

// flagValue reads `--long VALUE`, `--long=VALUE`, `-s VALUE` or `-s=VALUE`.
func flagValue(args []string, long, short string) string {
	for i, arg := range args {
		for _, name := range []string{long, short} {
			if arg == name && i+1 < len(args) {
				return args[i+1]
			}
			if strings.HasPrefix(arg, name+"=") {
				return strings.TrimPrefix(arg, name+"=")
			}
		}
	}
	return ""
}

func filterFile(path string, filter func(map[string]any) bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if !filter(doc) {
		return nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, info.Mode().Perm())
}

// filterCaps drops capabilities outside the bounding set from a process spec; true if any went.
func filterCaps(process map[string]any) bool {
	caps, _ := process["capabilities"].(map[string]any)
	if caps == nil {
		return false
	}
	bounding, err := boundingSet()
	if err != nil {
		return false // cannot tell: leave the spec as it is
	}
	changed := false
	for set, value := range caps {
		names, _ := value.([]any)
		kept := make([]any, 0, len(names))
		for _, name := range names {
			text, _ := name.(string)
			if number, known := capNumbers[text]; known && bounding&(1<<number) == 0 {
				changed = true
				continue
			}
			kept = append(kept, name)
		}
		caps[set] = kept
	}
	return changed
}

func boundingSet() (uint64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "CapBnd:") {
			return strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CapBnd:")), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapBnd line in /proc/self/status")
}

// realRunc is the first runc on PATH that is not this program.
func realRunc() (string, error) {
	self, _ := os.Executable()
	self, _ = filepath.EvalSymlinks(self)
	for _, dir := range filepath.SplitList(os.Getenv("PATH") + ":/usr/sbin:/usr/bin:/sbin:/bin") {
		candidate := filepath.Join(dir, "runc")
		resolved, err := filepath.EvalSymlinks(candidate)
		if err != nil || resolved == self {
			continue
		}
		if info, err := os.Stat(resolved); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return resolved, nil
		}
	}
	if path, err := exec.LookPath("runc"); err == nil && path != self {
		return path, nil
	}
	return "", fmt.Errorf("runc not found on PATH; install runc (Debian: apt-get install runc)")
}
