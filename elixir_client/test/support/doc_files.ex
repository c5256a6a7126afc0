defmodule ZarrBridge.Test.DocFiles do
  @moduledoc false
  # The files the doctests of ZarrBridge, Array, Group and Codecs read and
  # write: a fresh directory per call, removed when the test run ends.

  @doc "A new empty directory for one doctest."
  @spec dir() :: Path.t()
  def dir do
    dir =
      Path.join(
        System.tmp_dir!(),
        "zarr_bridge_doc_#{System.pid()}_#{System.unique_integer([:positive])}"
      )

    File.mkdir_p!(dir)
    ExUnit.after_suite(fn _ -> File.rm_rf(dir) end)
    dir
  end
end
