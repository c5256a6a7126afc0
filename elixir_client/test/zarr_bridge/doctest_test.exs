defmodule ZarrBridge.DoctestTest do
  # The examples in the docs run against the application's sidecar.
  use ExUnit.Case

  doctest ZarrBridge
  doctest ZarrBridge.Array
  doctest ZarrBridge.Group
  doctest ZarrBridge.Codecs
end
