//go:build linux

package natd

import (
	"fmt"
	"os"
	"strings"
)

// ApplySysctls writes every setting of Sysctls under /proc/sys that does not
// already hold its value, in the network namespace of the calling thread
// (lock the thread when calling it inside another namespace). It stops at
// the first failure and names the setting.
func ApplySysctls() error {
	for _, s := range Sysctls() {
		path := "/proc/sys/" + strings.ReplaceAll(s.Name, ".", "/")
		cur, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read sysctl %s: %w", s.Name, err)
		}
		if strings.TrimSpace(string(cur)) == s.Value {
			continue
		}
		if err := os.WriteFile(path, []byte(s.Value+"\n"), 0o644); err != nil {
			return fmt.Errorf("set sysctl %s=%s: %w", s.Name, s.Value, err)
		}
	}
	return nil
}
