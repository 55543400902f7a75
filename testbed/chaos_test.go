package testbed

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func hostNames(n int) []string {
	var hs []string
	for i := 1; i <= n; i++ {
		hs = append(hs, hostName(i))
	}
	return hs
}

func TestChaosScheduleDeterministic(t *testing.T) {
	plan := ChaosPlan{Seed: 42, Hosts: hostNames(7), Faults: 8}
	a, err := ChaosSchedule(plan)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ChaosSchedule(plan)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("the same seed gave two schedules:\n%v\n%v", a, b)
	}
	plan.Seed = 43
	c, _ := ChaosSchedule(plan)
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Fatalf("seeds 42 and 43 gave the same schedule: %v", a)
	}
}

// Over many seeds and sizes every schedule keeps the plan's rules.
func TestChaosScheduleRules(t *testing.T) {
	for _, hosts := range []int{2, 3, 7, 20} {
		for _, faults := range []int{1, 4, 12} {
			for seed := range uint64(50) {
				plan := ChaosPlan{Seed: seed, Hosts: hostNames(hosts), Faults: faults}
				fs, err := ChaosSchedule(plan)
				if err != nil {
					t.Fatal(err)
				}
				if err := checkSchedule(plan, fs); err != nil {
					t.Fatalf("%d hosts, %d faults, seed %d: %v\n%s", hosts, faults, seed, err, strings.Join(faultLines(fs), "\n"))
				}
			}
		}
	}
}

func checkSchedule(plan ChaosPlan, fs []Fault) error {
	if len(fs) != plan.Faults {
		return fmt.Errorf("%d faults, want %d", len(fs), plan.Faults)
	}
	kinds := map[FaultKind]bool{}
	hostFree := map[string]time.Duration{}
	var partitionEnd time.Duration
	for i, f := range fs {
		kinds[f.Kind] = true
		if i > 0 && f.At < fs[i-1].At {
			return fmt.Errorf("fault %d (%s) before fault %d", i, f, i-1)
		}
		if f.At%(100*time.Millisecond) != 0 || f.Hold%(100*time.Millisecond) != 0 {
			return fmt.Errorf("%s: not in 100 ms steps", f)
		}
		switch f.Kind {
		case FaultPartition:
			if f.At < partitionEnd {
				return fmt.Errorf("%s overlaps the partition before", f)
			}
			partitionEnd = f.End()
			var all []string
			for _, g := range f.Groups {
				if len(g) == 0 {
					return fmt.Errorf("%s: an empty group", f)
				}
				all = append(all, g...)
			}
			slices.SortFunc(all, compareHostNames)
			if len(f.Groups) < 2 || !slices.Equal(all, plan.Hosts) {
				return fmt.Errorf("%s: groups do not split %v", f, plan.Hosts)
			}
		case FaultKill, FaultCut, FaultRestart, FaultChurn:
			if !slices.Contains(plan.Hosts, f.Host) {
				return fmt.Errorf("%s: unknown host", f)
			}
			if f.At < hostFree[f.Host] {
				return fmt.Errorf("%s: %s is still busy until %v", f, f.Host, hostFree[f.Host])
			}
			hostFree[f.Host] = f.End()
			if f.Kind == FaultRestart || f.Kind == FaultChurn {
				hostFree[f.Host] = f.At + defaultRestartBusy
			}
			switch {
			case f.Kind == FaultChurn && (f.Gone < 1 || f.Gone > 2 || len(f.Attach) < 1 || len(f.Attach) > 3):
				return fmt.Errorf("%s: churn out of its bounds", f)
			case f.Kind == FaultKill && (f.Gone < 0 || f.Gone > 1 || f.Attach != nil):
				return fmt.Errorf("%s: kill removes %d", f, f.Gone)
			case (f.Kind == FaultCut || f.Kind == FaultRestart) && (f.Gone != 0 || f.Attach != nil):
				return fmt.Errorf("%s: removes or attaches containers", f)
			}
		default:
			return fmt.Errorf("%s: unknown kind", f)
		}
		hold := f.Hold
		if f.Kind == FaultRestart || f.Kind == FaultChurn {
			if hold != 0 {
				return fmt.Errorf("%s: a restart with a hold", f)
			}
		} else if hold < DefaultChaosMinHold || hold > DefaultChaosMaxHold {
			return fmt.Errorf("%s: hold out of 40-70 s", f)
		}
	}
	if plan.Faults >= len(FaultKinds) && len(kinds) != len(FaultKinds) {
		return fmt.Errorf("kinds %v: not every kind occurs", kinds)
	}
	return nil
}

func TestChaosPlanBad(t *testing.T) {
	for _, tc := range []struct {
		name string
		plan ChaosPlan
		want string
	}{
		{"one host", ChaosPlan{Hosts: []string{"h1"}}, "at least 2"},
		{"repeated host", ChaosPlan{Hosts: []string{"h1", "h1"}}, "repeated"},
		{"negative faults", ChaosPlan{Hosts: hostNames(3), Faults: -1}, "faults"},
		{"no kinds", ChaosPlan{Hosts: hostNames(3), Kinds: []FaultKind{}}, "no fault kinds"},
		{"unknown kind", ChaosPlan{Hosts: hostNames(3), Kinds: []FaultKind{"flood"}}, "unknown fault kind"},
		{"hold backwards", ChaosPlan{Hosts: hostNames(3), MinHold: time.Minute, MaxHold: time.Second}, "hold"},
		{"no services", ChaosPlan{Hosts: hostNames(3), Services: -1}, "services"},
		{"gap backwards", ChaosPlan{Hosts: hostNames(3), MinGap: time.Minute, MaxGap: time.Second}, "gap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ChaosSchedule(tc.plan)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one that says %q", err, tc.want)
			}
		})
	}
}

// One kind only: faults wait for a free host or the end of the partition.
func TestChaosScheduleWaits(t *testing.T) {
	fs, err := ChaosSchedule(ChaosPlan{Seed: 7, Hosts: hostNames(2), Faults: 5, Kinds: []FaultKind{FaultPartition}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(fs); i++ {
		if fs[i].At < fs[i-1].End() {
			t.Fatalf("partitions overlap: %v then %v", fs[i-1], fs[i])
		}
	}
	fs, _ = ChaosSchedule(ChaosPlan{Seed: 7, Hosts: hostNames(2), Faults: 5, Kinds: []FaultKind{FaultCut}})
	if err := checkSchedule(ChaosPlan{Hosts: hostNames(2), Faults: 5}, fs); err != nil && !strings.Contains(err.Error(), "not every kind") {
		t.Fatal(err)
	}
}

func TestChaosSteps(t *testing.T) {
	fs := []Fault{
		{At: 0, Kind: FaultPartition, Groups: [][]string{{"h1"}, {"h2"}}, Hold: 10 * time.Second},
		{At: 10 * time.Second, Kind: FaultPartition, Groups: [][]string{{"h2"}, {"h1"}}, Hold: 5 * time.Second},
		{At: 3 * time.Second, Kind: FaultRestart, Host: "h2"},
		{At: 4 * time.Second, Kind: FaultKill, Host: "h1", Hold: 6 * time.Second},
		{At: 12 * time.Second, Kind: FaultChurn, Host: "h1", Gone: 1, Attach: []string{"svc0"}},
	}
	var got []string
	for _, s := range chaosSteps(fs) {
		got = append(got, fmt.Sprintf("%v %s undo=%v", s.at, s.fault.Kind, s.undo))
	}
	want := []string{
		"0s partition undo=false",
		"3s restart undo=false",
		"4s kill undo=false",
		"10s partition undo=true", // heal the first partition …
		"10s kill undo=true",
		"10s partition undo=false", // … before the second begins
		"12s churn undo=false",
		"15s partition undo=true",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("steps\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ChaosEnd(fs) != 15*time.Second {
		t.Fatalf("ChaosEnd = %v", ChaosEnd(fs))
	}
}

func TestFaultString(t *testing.T) {
	for _, tc := range []struct {
		f    Fault
		want string
	}{
		{Fault{At: 1500 * time.Millisecond, Kind: FaultKill, Host: "h3", Hold: 45 * time.Second}, "t+1.5s kill -9 h3, start again after 45s"},
		{Fault{Kind: FaultRestart, Host: "h1"}, "t+0s restart h1"},
		{Fault{Kind: FaultKill, Host: "h3", Hold: 45 * time.Second, Gone: 1}, "t+0s kill -9 h3, start again after 45s, remove 1 of its containers meanwhile"},
		{Fault{Kind: FaultChurn, Host: "h2", Gone: 2, Attach: []string{"svc1", "svc4"}}, "t+0s churn on h2: attach 2 to svc1,svc4, then remove 2"},
		{Fault{At: time.Second, Kind: FaultCut, Host: "h2", Hold: time.Minute}, "t+1s cut h2 off for 1m0s"},
		{Fault{Kind: FaultPartition, Groups: [][]string{{"h1", "h2"}, {"h3"}}, Hold: 40 * time.Second}, "t+0s partition {h1,h2} | {h3} for 40s"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("%q, want %q", got, tc.want)
		}
	}
}
