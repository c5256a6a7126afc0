defmodule ZarrBridge.ErrorTest do
  use ExUnit.Case, async: true

  alias ZarrBridge.Error

  doctest ZarrBridge.Error

  # The closed set of codes is checked against protocol/contract.json in
  # contract_test.exs.

  describe "from_wire/1" do
    test "maps every wire code to its atom" do
      for code <- Error.codes() -- [:timeout, :sidecar_exited, :sidecar_unavailable] do
        wire = %{"code" => Atom.to_string(code), "message" => "m", "details" => %{}}

        assert %Error{code: ^code, message: "m", details: %{}, python: nil} =
                 Error.from_wire(wire)
      end
    end

    test "client-side codes and unknown codes become :internal, keeping the original" do
      for code <- ["timeout", "brand_new_code", 42, nil] do
        error = Error.from_wire(%{"code" => code, "message" => "x", "details" => %{"a" => 1}})
        assert error.code == :internal
        assert error.details == %{"a" => 1, "code" => code}
      end
    end

    test "keeps details and the Python exception" do
      wire = %{
        "code" => "internal",
        "message" => "ValueError: boom",
        "details" => %{"param" => "x"},
        "python_type" => "ValueError",
        "traceback" => "Traceback (most recent call last):\n..."
      }

      assert Error.from_wire(wire) == %Error{
               code: :internal,
               message: "ValueError: boom",
               details: %{"param" => "x"},
               python: %{type: "ValueError", traceback: "Traceback (most recent call last):\n..."}
             }
    end

    test "tolerates missing or malformed fields" do
      assert %Error{code: :not_found, message: "", details: %{}, python: nil} =
               Error.from_wire(%{"code" => "not_found"})

      assert %Error{code: :not_found, message: "[1]", details: %{}} =
               Error.from_wire(%{"code" => "not_found", "message" => [1], "details" => "no"})

      assert %Error{python: %{type: "", traceback: "tb"}} =
               Error.from_wire(%{"code" => "internal", "traceback" => "tb"})

      assert %Error{code: :invalid_message, message: "the sidecar sent a malformed error" <> _} =
               Error.from_wire("just a string")
    end
  end

  describe "as an exception" do
    test "message/1 names the code" do
      error = %Error{
        code: :sidecar_exited,
        message: "the sidecar exited",
        details: %{exit_status: 9}
      }

      assert Exception.message(error) == "sidecar_exited: the sidecar exited"
      assert Exception.message(%Error{code: :overloaded}) == "overloaded"
    end

    test "can be raised and rescued" do
      assert_raise Error, "decode_failed: bad chunk (Python RuntimeError)", fn ->
        raise %Error{
          code: :decode_failed,
          message: "bad chunk",
          python: %{type: "RuntimeError", traceback: ""}
        }
      end
    end
  end
end
