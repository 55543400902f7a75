package main

import (
	"flag"
	"fmt"
	"sort"
	"strings"
)

// envPrefix starts every environment variable zlmesh reads.
const envPrefix = "ZLMESH_"

// otherEnv are ZLMESH_* variables that are not `zlmesh up` settings but are
// used elsewhere (the testbed and e2e helpers, the scripts and benchmarks);
// `zlmesh up` ignores them without a warning. A name ending in "_" is a
// prefix.
var otherEnv = []string{"ZLMESH_TESTBED_", "ZLMESH_E2E_", "ZLMESH_ARGS", "ZLMESH_REV", "ZLMESH_TOOLS"}

// envName is the environment variable of flag name: ZLMESH_ and the name
// in upper case with dashes as underscores (dns-upstream →
// ZLMESH_DNS_UPSTREAM).
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// layerSettings sets the flags of fs, defined but not yet parsed, from
// every source in the documented order: a flag on the command line wins over
// its ZLMESH_<FLAG> variable, which wins over the config file (--config, or
// ZLMESH_CONFIG), which wins over the default. A list flag (--join,
// --dns-upstream, --dns-listen) takes all its values from the one source
// that wins. scratch is a second flag set with the same flags bound to
// throwaway variables: args are parsed into it first to learn which flags
// the command line sets. environ is os.Environ(); an empty variable counts
// as unset. It returns a warning for every ZLMESH_* variable that names no
// setting; an error names the flag, variable or file line with the bad
// value.
func layerSettings(fs, scratch *flag.FlagSet, args, environ []string) (warnings []string, err error) {
	if err := scratch.Parse(args); err != nil {
		// Again on fs, whose output is the user's: -h prints the usage,
		// a bad flag its error and the usage, as without this layering.
		return nil, fs.Parse(args)
	}
	cmdline := map[string]bool{}
	scratch.Visit(func(f *flag.Flag) { cmdline[f.Name] = true })
	env, warnings := envSettings(fs, environ)

	path := findConfigArg(args)
	if path == "" {
		path = env["config"]
	}
	if path != "" {
		skip := map[string]bool{}
		for name := range cmdline {
			skip[name] = true
		}
		for name := range env {
			skip[name] = true
		}
		if err := applyConfigFile(fs, path, skip); err != nil {
			return warnings, err
		}
	}
	names := make([]string, 0, len(env))
	for name := range env {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if cmdline[name] || name == "config" {
			continue
		}
		if err := fs.Set(name, env[name]); err != nil {
			return warnings, fmt.Errorf("environment %s=%q: %v", envName(name), env[name], err)
		}
	}
	if err := fs.Parse(args); err != nil {
		return warnings, err
	}
	return warnings, nil
}

// envSettings returns the ZLMESH_* variables of environ that set a flag of
// fs (flag name → value), and a warning for each other ZLMESH_* variable.
func envSettings(fs *flag.FlagSet, environ []string) (map[string]string, []string) {
	byEnv := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { byEnv[envName(f.Name)] = f.Name })
	set := map[string]string{}
	var warnings []string
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, envPrefix) {
			continue
		}
		if name, ok := byEnv[k]; ok {
			if v != "" {
				set[name] = v
			}
			continue
		}
		if !isOtherEnv(k) {
			warnings = append(warnings, fmt.Sprintf("unknown environment variable %s ignored (`zlmesh up` settings are %s<FLAG>, e.g. %s)", k, envPrefix, envName("listen-port")))
		}
	}
	sort.Strings(warnings)
	return set, warnings
}

func isOtherEnv(k string) bool {
	for _, o := range otherEnv {
		if k == o || strings.HasSuffix(o, "_") && strings.HasPrefix(k, o) {
			return true
		}
	}
	return false
}
