defmodule ZarrBridge.Test.TmpDir do
  @moduledoc false
  # Fresh temporary directories for tests, removed when the test ends.
  # Named by OS pid too: test runs of several checkouts share /tmp.

  @doc "A new empty directory `zb-<name>-<os pid>-<unique>`, removed on exit."
  @spec tmp_dir(String.t()) :: Path.t()
  def tmp_dir(name \\ "test") do
    unique = "#{System.pid()}-#{System.unique_integer([:positive])}"
    dir = Path.join(System.tmp_dir!(), "zb-#{name}-#{unique}")
    File.mkdir_p!(dir)
    ExUnit.Callbacks.on_exit(fn -> File.rm_rf!(dir) end)
    dir
  end
end
