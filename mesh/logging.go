package mesh

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
)

// discardLogger is used when Config.Logger is nil.
var discardLogger = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError + 1}))

// newMemberlistLogger returns a *log.Logger for memberlist whose lines go to
// l, one slog record per line, at the level memberlist put in front of it.
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(&memberlistLogWriter{log: l}, "", 0)
}

// memberlistLogWriter turns memberlist's "[LEVEL] memberlist: text" lines
// into slog records. log.Logger calls Write once per line and serializes the
// calls.
type memberlistLogWriter struct {
	log *slog.Logger
}

func (w *memberlistLogWriter) Write(p []byte) (int, error) {
	level, msg := parseMemberlistLine(string(p))
	if !w.log.Enabled(context.Background(), level) {
		return len(p), nil
	}
	attrs := []any{"src", "memberlist"}
	if hint := keyHint(msg); hint != "" {
		attrs = append(attrs, "hint", hint)
	}
	w.log.Log(context.Background(), level, msg, attrs...)
	return len(p), nil
}

// parseMemberlistLine splits a memberlist log line into its level and text.
// Lines without a known level prefix are logged at Info.
func parseMemberlistLine(line string) (slog.Level, string) {
	line = strings.TrimRight(line, "\r\n")
	level := slog.LevelInfo
	if strings.HasPrefix(line, "[") {
		if end := strings.IndexByte(line, ']'); end > 0 {
			switch line[1:end] {
			case "ERR", "ERROR":
				level = slog.LevelError
			case "WARN", "WARNING":
				level = slog.LevelWarn
			case "INFO":
				level = slog.LevelInfo
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			}
			line = strings.TrimSpace(line[end+1:])
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	return level, line
}

// keyHintText is attached to log lines and join errors caused by a cluster
// key mismatch.
const keyHintText = "the cluster key is likely wrong or missing on one side"

// keyHint returns keyHintText when msg is one of memberlist's encryption
// failures, else "".
func keyHint(msg string) string {
	lower := strings.ToLower(msg)
	if strings.Contains(lower, "decrypt") || strings.Contains(lower, "encrypt") {
		return keyHintText
	}
	return ""
}
