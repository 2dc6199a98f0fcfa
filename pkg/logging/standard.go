package logging

import (
	"io"

	"github.com/sirupsen/logrus"
)

// CaptureStandard sends what libraries log through logrus's standard
// logger (BuildKit's client, containerd's content store behind it) to log
// at debug level: through its redactor, in its format, and not on stderr
// unannounced, where a person watching the build would take an internal
// retry ("ref ... locked") for an error.
func CaptureStandard(log *logrus.Entry) {
	std := logrus.StandardLogger()
	std.SetOutput(io.Discard)
	std.ReplaceHooks(logrus.LevelHooks{})
	std.AddHook(forward{log})
}

type forward struct{ to *logrus.Entry }

func (forward) Levels() []logrus.Level { return logrus.AllLevels }

func (f forward) Fire(e *logrus.Entry) error {
	f.to.WithFields(e.Data).Debugf("%s: %s", e.Level, e.Message)
	return nil
}
