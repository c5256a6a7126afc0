defmodule ZarrBridge.ContractTest do
  # protocol/contract.json is the wire contract as data; tests/test_contract.py
  # checks the sidecar against the same file. Neither side reads the other's source.
  use ExUnit.Case, async: true

  alias ZarrBridge.Error
  alias ZarrBridge.Test.JSON

  @contract_path Path.expand("../../../protocol/contract.json", __DIR__)

  setup_all do
    %{contract: @contract_path |> File.read!() |> JSON.decode!()}
  end

  defp codes(contract, sent_by) do
    for %{"code" => code, "sent_by" => by} <- contract["errors"], by in sent_by, do: code
  end

  test "Error.codes/0 is the contract's codes that a client can see, in order", %{contract: c} do
    assert Enum.map(Error.codes(), &Atom.to_string/1) == codes(c, ["sidecar", "client"])
  end

  test "every code the sidecar sends maps to its own atom", %{contract: c} do
    for code <- codes(c, ["sidecar"]) do
      assert %Error{code: atom} = Error.from_wire(%{"code" => code, "message" => "m"})
      assert Atom.to_string(atom) == code
    end
  end

  test "client-only and never-sent codes coming over the wire become :internal", %{contract: c} do
    for code <- codes(c, ["client", "none"]) do
      assert %Error{code: :internal} = Error.from_wire(%{"code" => code, "message" => "m"})
    end
  end
end
