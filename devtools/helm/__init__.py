"""helm, built from the Go module here (`build`), for the tests that lint and render the chart."""
