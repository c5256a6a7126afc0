defmodule ZarrBridge.MsgpackTest do
  use ExUnit.Case, async: true

  import Bitwise

  alias ZarrBridge.Msgpack
  alias ZarrBridge.Test.{JSON, TermGenerator}

  doctest ZarrBridge.Msgpack

  defp enc(term), do: term |> Msgpack.encode!() |> IO.iodata_to_binary()

  defp hex(""), do: ""

  defp hex(text),
    do: text |> String.split("-") |> Enum.map_join(&Base.decode16!(&1, case: :mixed))

  ## Shared cross-implementation vectors (msgpack-test-suite)

  # elixir_client/test/zarr_bridge -> repo root -> ../shared
  @suite_path System.get_env("MSGPACK_TEST_SUITE") ||
                Path.expand(
                  "../../../../shared/msgpack-test-suite/msgpack-test-suite.json",
                  __DIR__
                )
  @external_resource @suite_path

  describe "msgpack-test-suite vectors" do
    if File.exists?(@suite_path) do
      vectors =
        for {file, entries} <- @suite_path |> File.read!() |> JSON.decode!() |> Enum.sort(),
            {entry, index} <- Enum.with_index(entries) do
          {"#{file} ##{index}", entry}
        end

      for {name, entry} <- vectors do
        test "#{name}: #{inspect(Map.delete(entry, "msgpack"))}" do
          check_vector(unquote(Macro.escape(entry)))
        end
      end
    else
      @tag skip: "msgpack-test-suite not found at #{@suite_path}"
      test "msgpack-test-suite vectors" do
        flunk("unreachable: this test is skipped when the suite is absent")
      end
    end
  end

  defp check_vector(%{"msgpack" => [_ | _] = encodings} = entry) do
    expected = vector_value(entry)

    for encoding <- encodings do
      assert {:ok, decoded} = Msgpack.decode(hex(encoding)), "decoding #{encoding}"
      # == and not ===: the vectors encode some integers as floats.
      assert decoded == expected, "decoding #{encoding} gave #{inspect(decoded)}"
    end

    # The canonical form is the first encoding listed, with two rules of ours
    # on top: floats are always float64 (the first 0xCB form), and
    # non-negative integers always use the unsigned forms (the suite lists
    # int64 before uint64 for 2^63-1, but uint64 first for 2^32 and 2^48).
    canonical =
      cond do
        is_float(expected) -> Enum.find(encodings, &String.starts_with?(&1, "cb"))
        is_integer(expected) and expected >= 0 -> Enum.find(encodings, &(not signed_int?(&1)))
        true -> hd(encodings)
      end

    assert enc(expected) == hex(canonical)
  end

  defp signed_int?(encoding), do: String.starts_with?(encoding, ["d0", "d1", "d2", "d3"])

  defp vector_value(%{"nil" => nil}), do: nil
  defp vector_value(%{"bool" => bool}), do: bool
  defp vector_value(%{"binary" => bytes}), do: {:bin, hex(bytes)}
  defp vector_value(%{"bignum" => digits}), do: String.to_integer(digits)
  defp vector_value(%{"number" => number}), do: number
  defp vector_value(%{"string" => string}), do: string
  defp vector_value(%{"array" => array}), do: array
  defp vector_value(%{"map" => map}), do: map
  defp vector_value(%{"timestamp" => [sec, nsec]}), do: {:timestamp, sec, nsec}
  defp vector_value(%{"ext" => [type, bytes]}), do: {:ext, type, hex(bytes)}

  ## Property-style tests (seeded by ExUnit's --seed)

  @cases 3000

  defp for_cases(count, salt, fun) do
    seed = ExUnit.configuration()[:seed]

    for i <- 1..count do
      TermGenerator.seed({seed, salt, i})

      try do
        fun.()
      rescue
        error in [ExUnit.AssertionError] ->
          message = "#{error.message}\n(case #{i}; reproduce with `mix test --seed #{seed}`)"
          reraise %{error | message: message}, __STACKTRACE__
      end
    end
  end

  describe "properties" do
    test "random terms round-trip exactly" do
      for_cases(@cases, 1, fn ->
        term = TermGenerator.term(40)
        assert {:ok, iodata} = Msgpack.encode(term)
        assert {:ok, decoded} = Msgpack.decode(IO.iodata_to_binary(iodata))
        assert decoded === term
      end)
    end

    test "every strict prefix of a valid encoding is :truncated" do
      for_cases(@cases, 2, fn ->
        bin = enc(TermGenerator.term(20))
        size = byte_size(bin)

        cuts =
          if size <= 64,
            do: Enum.to_list(0..(size - 1)),
            else: [0, size - 1 | for(_ <- 1..20, do: :rand.uniform(size) - 1)]

        for cut <- cuts do
          assert Msgpack.decode(binary_part(bin, 0, cut)) == {:error, :truncated},
                 "prefix of #{cut}/#{size} bytes of #{inspect(bin)}"
        end
      end)
    end

    test "corrupted encodings never raise" do
      for_cases(@cases, 3, fn ->
        bin = enc(TermGenerator.term(20))
        corrupted = corrupt(bin, :rand.uniform(4))
        assert_total(corrupted)
        assert_total(corrupted <> TermGenerator.bytes(:rand.uniform(4)))
      end)
    end

    test "random bytes never raise" do
      for_cases(@cases, 4, fn ->
        assert_total(TermGenerator.bytes(:rand.uniform(64) - 1))
      end)
    end

    test "concatenated values come apart with decode_prefix" do
      for_cases(500, 5, fn ->
        terms = for _ <- 1..:rand.uniform(5), do: TermGenerator.term(10)
        bin = terms |> Enum.map(&Msgpack.encode!/1) |> IO.iodata_to_binary()
        assert split_all(bin, []) === terms
      end)
    end
  end

  defp corrupt(bin, 0), do: bin
  defp corrupt("", _n), do: ""

  defp corrupt(bin, n) do
    pos = :rand.uniform(byte_size(bin)) - 1
    <<head::binary-size(pos), _, tail::binary>> = bin
    corrupt(<<head::binary, :rand.uniform(256) - 1, tail::binary>>, n - 1)
  end

  defp assert_total(bin) do
    assert match?({:ok, _}, Msgpack.decode(bin)) or match?({:error, _}, Msgpack.decode(bin)),
           "decode(#{inspect(bin)})"

    assert match?({:ok, _, _}, Msgpack.decode_prefix(bin)) or
             match?({:error, _}, Msgpack.decode_prefix(bin))
  end

  defp split_all("", acc), do: Enum.reverse(acc)

  defp split_all(bin, acc) do
    {:ok, term, rest} = Msgpack.decode_prefix(bin)
    split_all(rest, [term | acc])
  end

  ## Edge cases

  describe "integers" do
    @int_cases [
      {0, "00"},
      {127, "7f"},
      {128, "cc80"},
      {255, "ccff"},
      {256, "cd0100"},
      {0xFFFF, "cdffff"},
      {0x10000, "ce00010000"},
      {0xFFFF_FFFF, "ceffffffff"},
      {0x1_0000_0000, "cf0000000100000000"},
      {0x7FFF_FFFF_FFFF_FFFF, "cf7fffffffffffffff"},
      {0xFFFF_FFFF_FFFF_FFFF, "cfffffffffffffffff"},
      {-1, "ff"},
      {-32, "e0"},
      {-33, "d0df"},
      {-128, "d080"},
      {-129, "d1ff7f"},
      {-0x8000, "d18000"},
      {-0x8001, "d2ffff7fff"},
      {-0x8000_0000, "d280000000"},
      {-0x8000_0001, "d3ffffffff7fffffff"},
      {-0x8000_0000_0000_0000, "d38000000000000000"}
    ]

    test "use the smallest encoding, at every size-class boundary" do
      for {n, hex} <- @int_cases do
        bin = Base.decode16!(hex, case: :lower)
        assert enc(n) == bin, "encoding #{n}"
        assert Msgpack.decode(bin) == {:ok, n}
      end
    end

    test "outside -2^63..2^64-1 are rejected" do
      for n <- [1 <<< 64, -(1 <<< 63) - 1, 1 <<< 100] do
        assert Msgpack.encode(n) == {:error, {:integer_out_of_range, n}}
        assert Msgpack.encode([1, %{"k" => n}]) == {:error, {:integer_out_of_range, n}}
      end
    end

    test "wide signed and unsigned forms decode to the same integer" do
      assert Msgpack.decode(<<0xCF, 0xFFFF_FFFF_FFFF_FFFF::64>>) == {:ok, 0xFFFF_FFFF_FFFF_FFFF}
      assert Msgpack.decode(<<0xD3, -1::signed-64>>) == {:ok, -1}
      assert Msgpack.decode(<<0xD0, 5>>) == {:ok, 5}
      assert Msgpack.decode(<<0xCD, 5::16>>) == {:ok, 5}
    end
  end

  describe "floats" do
    test "encode as float64 always" do
      assert enc(1.0) == <<0xCB, 1.0::float-64>>
      assert enc(0.5) == <<0xCB, 0x3FE0_0000_0000_0000::64>>
      assert enc(1.7976931348623157e308) == <<0xCB, 1.7976931348623157e308::float-64>>
    end

    test "float32 decodes to a float" do
      assert Msgpack.decode(<<0xCA, 1.5::float-32>>) == {:ok, 1.5}
      assert Msgpack.decode(<<0xCA, -0.25::float-32>>) == {:ok, -0.25}
      # smallest float32 subnormal
      assert {:ok, f} = Msgpack.decode(<<0xCA, 1::32>>)
      assert_in_delta f, 1.401298464324817e-45, 1.0e-50
    end

    test "NaN and infinities decode to atoms, from float32 and float64" do
      for {bin, atom} <- [
            {<<0xCA, 0x7FC0_0000::32>>, :nan},
            {<<0xCA, 0xFFC0_0001::32>>, :nan},
            {<<0xCA, 0x7F80_0000::32>>, :infinity},
            {<<0xCA, 0xFF80_0000::32>>, :neg_infinity},
            {<<0xCB, 0x7FF8_0000_0000_0000::64>>, :nan},
            {<<0xCB, 0x7FF0_0000_0000_0001::64>>, :nan},
            {<<0xCB, 0xFFF8_0000_0000_0000::64>>, :nan},
            {<<0xCB, 0x7FF0_0000_0000_0000::64>>, :infinity},
            {<<0xCB, 0xFFF0_0000_0000_0000::64>>, :neg_infinity}
          ] do
        assert Msgpack.decode(bin) == {:ok, atom}, inspect(bin)
      end
    end

    test "NaN and infinity atoms encode as float64" do
      assert enc(:nan) == <<0xCB, 0x7FF8_0000_0000_0000::64>>
      assert enc(:infinity) == <<0xCB, 0x7FF0_0000_0000_0000::64>>
      assert enc(:neg_infinity) == <<0xCB, 0xFFF0_0000_0000_0000::64>>
    end

    test "-0.0 keeps its sign" do
      <<neg_zero::float-64>> = <<0x8000_0000_0000_0000::64>>
      assert enc(neg_zero) == <<0xCB, 0x8000_0000_0000_0000::64>>
      assert {:ok, f} = Msgpack.decode(<<0xCB, 0x8000_0000_0000_0000::64>>)
      assert <<1::1, 0::63>> = <<f::float-64>>
      assert {:ok, f32} = Msgpack.decode(<<0xCA, 0x8000_0000::32>>)
      assert <<1::1, 0::63>> = <<f32::float-64>>
    end
  end

  describe "strings and binaries" do
    test "binaries are str, {:bin, _} is bin" do
      assert enc("abc") == <<0xA3, "abc">>
      assert enc({:bin, "abc"}) == <<0xC4, 3, "abc">>
      assert Msgpack.decode(<<0xA3, "abc">>) == {:ok, "abc"}
      assert Msgpack.decode(<<0xC4, 3, "abc">>) == {:ok, {:bin, "abc"}}
    end

    test "str is not checked for UTF-8" do
      assert enc(<<0xFF, 0xFE>>) == <<0xA2, 0xFF, 0xFE>>
      assert Msgpack.decode(<<0xA2, 0xFF, 0xFE>>) == {:ok, <<0xFF, 0xFE>>}
    end

    test "atoms encode as str; decoding never gives atoms" do
      assert enc(:hello) == <<0xA5, "hello">>
      assert enc(Elixir.Foo) == enc("Elixir.Foo")
      assert Msgpack.decode(enc(%{ok: :yes})) == {:ok, %{"ok" => "yes"}}
    end

    test "bin accepts iodata and keeps it in the output without copying" do
      assert enc({:bin, ["ab", ?c, ["d" | "e"]]}) == <<0xC4, 5, "abcde">>
      big = :binary.copy("x", 300_000)
      assert {:ok, [_header, data]} = Msgpack.encode({:bin, big})
      assert :erts_debug.same(data, big)
      list = ["a", big]
      assert {:ok, [_header, data]} = Msgpack.encode({:bin, list})
      assert :erts_debug.same(data, list)
    end

    test "decoded bin is a sub-binary of the input; decoded str is a copy" do
      payload = :binary.copy(<<7>>, 1000)
      message = enc([%{"key" => "some string", "data" => {:bin, payload}}, 42])
      assert {:ok, [%{"key" => key, "data" => {:bin, data}}, 42]} = Msgpack.decode(message)
      assert data == payload
      assert :binary.referenced_byte_size(data) == byte_size(message)
      assert :binary.referenced_byte_size(data) > byte_size(data)
      assert :binary.referenced_byte_size(key) == byte_size(key)
    end

    test "size-class boundaries for str" do
      for {size, header} <- [
            {0, <<0xA0>>},
            {31, <<0xBF>>},
            {32, <<0xD9, 32>>},
            {255, <<0xD9, 255>>},
            {256, <<0xDA, 256::16>>},
            {65_535, <<0xDA, 65_535::16>>},
            {65_536, <<0xDB, 65_536::32>>}
          ] do
        s = :binary.copy("s", size)
        assert enc(s) == header <> s, "str of #{size} bytes"
        assert Msgpack.decode(header <> s) == {:ok, s}
      end
    end

    test "size-class boundaries for bin" do
      for {size, header} <- [
            {0, <<0xC4, 0>>},
            {255, <<0xC4, 255>>},
            {256, <<0xC5, 256::16>>},
            {65_535, <<0xC5, 65_535::16>>},
            {65_536, <<0xC6, 65_536::32>>}
          ] do
        b = :binary.copy("b", size)
        assert enc({:bin, b}) == header <> b, "bin of #{size} bytes"
        assert Msgpack.decode(header <> b) == {:ok, {:bin, b}}
      end
    end

    test "wider headers than needed still decode" do
      assert Msgpack.decode(<<0xDB, 2::32, "hi">>) == {:ok, "hi"}
      assert Msgpack.decode(<<0xC6, 2::32, "hi">>) == {:ok, {:bin, "hi"}}
    end

    test "sizes of 2^32 bytes or more are rejected (without allocating them)" do
      mib = :binary.copy(<<0>>, 1 <<< 20)
      huge = List.duplicate(mib, 4096) ++ ["x"]
      assert Msgpack.encode({:bin, huge}) == {:error, {:too_large, (1 <<< 32) + 1}}
      assert Msgpack.encode({:ext, 5, huge}) == {:error, {:too_large, (1 <<< 32) + 1}}
    end
  end

  describe "arrays and maps" do
    test "empty containers" do
      assert enc([]) == <<0x90>>
      assert enc(%{}) == <<0x80>>
      assert enc("") == <<0xA0>>
      assert enc({:bin, ""}) == <<0xC4, 0>>
      assert Msgpack.decode(<<0xDC, 0::16>>) == {:ok, []}
      assert Msgpack.decode(<<0xDF, 0::32>>) == {:ok, %{}}
    end

    test "size-class boundaries for arrays" do
      for {size, header} <- [
            {15, <<0x9F>>},
            {16, <<0xDC, 16::16>>},
            {65_535, <<0xDC, 65_535::16>>},
            {65_536, <<0xDD, 65_536::32>>}
          ] do
        list = List.duplicate(1, size)
        bin = enc(list)
        assert binary_part(bin, 0, byte_size(header)) == header, "array of #{size}"
        assert Msgpack.decode(bin) == {:ok, list}
      end
    end

    test "size-class boundaries for maps" do
      for {size, header} <- [
            {15, <<0x8F>>},
            {16, <<0xDE, 16::16>>},
            {65_535, <<0xDE, 65_535::16>>},
            {65_536, <<0xDF, 65_536::32>>}
          ] do
        map = Map.new(1..size, &{&1, nil})
        bin = enc(map)
        assert binary_part(bin, 0, byte_size(header)) == header, "map of #{size}"
        assert Msgpack.decode(bin) == {:ok, map}
      end
    end

    test "map keys may be any term" do
      map = %{1 => "int", 1.0 => "float", [1] => "list", %{"a" => nil} => "map", nil => 0}
      assert Msgpack.decode(enc(map)) == {:ok, map}
    end

    test "duplicate keys: the last one wins" do
      assert Msgpack.decode(<<0x82, 0xA1, ?k, 1, 0xA1, ?k, 2>>) == {:ok, %{"k" => 2}}
    end

    test "nesting is limited to 512 levels on decode" do
      ok = :binary.copy(<<0x91>>, 511) <> <<0x90>>
      assert {:ok, _} = Msgpack.decode(ok)
      assert Msgpack.decode(:binary.copy(<<0x91>>, 512) <> <<0x90>>) == {:error, :too_deep}
      assert Msgpack.decode(:binary.copy(<<0x81, 0xC0>>, 1000) <> <<0xC0>>) == {:error, :too_deep}
      assert Msgpack.decode(:binary.copy(<<0x91>>, 1_000_000)) == {:error, :too_deep}
    end

    test "deeply nested terms encode without trouble" do
      deep = Enum.reduce(1..100_000, [], fn _, acc -> [acc] end)
      bin = enc(deep)
      assert byte_size(bin) == 100_001
    end

    test "large inputs decode in linear time" do
      # A quadratic decoder would not finish 10^6 items within the test timeout.
      list = Enum.to_list(1..1_000_000)
      assert Msgpack.decode(enc(list)) == {:ok, list}
      chunks = List.duplicate({:bin, :binary.copy(<<1>>, 262_144)}, 64)
      assert Msgpack.decode(enc(chunks)) == {:ok, chunks}
    end

    test "headers announcing more than the input holds are :truncated" do
      for header <- [<<0xDD, 0xFFFF_FFFF::32>>, <<0xDF, 0xFFFF_FFFF::32>>] do
        assert Msgpack.decode(header <> :binary.copy(<<0xC0>>, 1000)) == {:error, :truncated}
      end

      assert Msgpack.decode(<<0xDB, 0xFFFF_FFFF::32, "abc">>) == {:error, :truncated}
      assert Msgpack.decode(<<0xC6, 0xFFFF_FFFF::32, "abc">>) == {:error, :truncated}
      assert Msgpack.decode(<<0xC9, 0xFFFF_FFFF::32, 1, "abc">>) == {:error, :truncated}
    end
  end

  describe "ext and timestamps" do
    test "ext uses fixext or the smallest ext header" do
      for {size, header} <- [
            {0, <<0xC7, 0, 5>>},
            {1, <<0xD4, 5>>},
            {2, <<0xD5, 5>>},
            {3, <<0xC7, 3, 5>>},
            {4, <<0xD6, 5>>},
            {8, <<0xD7, 5>>},
            {16, <<0xD8, 5>>},
            {17, <<0xC7, 17, 5>>},
            {255, <<0xC7, 255, 5>>},
            {256, <<0xC8, 256::16, 5>>},
            {65_535, <<0xC8, 65_535::16, 5>>},
            {65_536, <<0xC9, 65_536::32, 5>>}
          ] do
        data = :binary.copy("e", size)
        assert enc({:ext, 5, data}) == header <> data, "ext of #{size} bytes"
        assert Msgpack.decode(header <> data) == {:ok, {:ext, 5, data}}
      end
    end

    test "ext types are signed bytes" do
      assert enc({:ext, -128, "a"}) == <<0xD4, 0x80, ?a>>
      assert enc({:ext, 127, "a"}) == <<0xD4, 0x7F, ?a>>
      assert Msgpack.decode(<<0xD4, 0x80, ?a>>) == {:ok, {:ext, -128, "a"}}
      assert Msgpack.encode({:ext, 128, "a"}) == {:error, {:unsupported_term, {:ext, 128, "a"}}}
      assert Msgpack.encode({:ext, -129, "a"}) == {:error, {:unsupported_term, {:ext, -129, "a"}}}
    end

    test "timestamps use the smallest of the three forms" do
      assert enc({:timestamp, 0, 0}) == <<0xD6, 0xFF, 0::32>>
      assert enc({:timestamp, 0xFFFF_FFFF, 0}) == <<0xD6, 0xFF, 0xFFFF_FFFF::32>>
      assert enc({:timestamp, 1 <<< 32, 0}) == <<0xD7, 0xFF, 0::30, 1 <<< 32::34>>
      assert enc({:timestamp, 1, 1}) == <<0xD7, 0xFF, 1::30, 1::34>>

      assert enc({:timestamp, (1 <<< 34) - 1, 999_999_999}) ==
               <<0xD7, 0xFF, 999_999_999::30, (1 <<< 34) - 1::34>>

      assert enc({:timestamp, 1 <<< 34, 0}) == <<0xC7, 12, 0xFF, 0::32, 1 <<< 34::64>>
      assert enc({:timestamp, -1, 5}) == <<0xC7, 12, 0xFF, 5::32, -1::signed-64>>
    end

    test "timestamps decode from all three forms" do
      assert Msgpack.decode(<<0xD6, 0xFF, 7::32>>) == {:ok, {:timestamp, 7, 0}}
      assert Msgpack.decode(<<0xD7, 0xFF, 3::30, 7::34>>) == {:ok, {:timestamp, 7, 3}}

      assert Msgpack.decode(<<0xC7, 12, 0xFF, 3::32, -7::signed-64>>) ==
               {:ok, {:timestamp, -7, 3}}
    end

    test "invalid timestamps are rejected" do
      assert Msgpack.decode(<<0xD7, 0xFF, 1_000_000_000::30, 0::34>>) ==
               {:error, :invalid_timestamp}

      assert Msgpack.decode(<<0xC7, 12, 0xFF, 1_000_000_000::32, 0::64>>) ==
               {:error, :invalid_timestamp}

      assert Msgpack.decode(<<0xD4, 0xFF, 0>>) == {:error, :invalid_timestamp}

      for bad <- [{:timestamp, 0, 1_000_000_000}, {:timestamp, 0, -1}, {:timestamp, 1 <<< 63, 0}] do
        assert Msgpack.encode(bad) == {:error, {:unsupported_term, bad}}
      end
    end
  end

  describe "errors" do
    test "unsupported terms" do
      pid = self()
      fun = fn -> :ok end
      ref = make_ref()

      for term <- [
            {1, 2},
            {},
            pid,
            fun,
            ref,
            <<1::3>>,
            URI.parse("http://x"),
            {:bin, 5},
            {:bin, [1 | 2]},
            {:bin, [256]},
            {:ext, 1, :x}
          ] do
        assert Msgpack.encode(term) == {:error, {:unsupported_term, term}}
      end

      assert Msgpack.encode([1 | 2]) == {:error, {:unsupported_term, [1 | 2]}}
      assert Msgpack.encode([1, %{"a" => {pid}}]) == {:error, {:unsupported_term, {pid}}}
    end

    test "decode errors" do
      assert Msgpack.decode("") == {:error, :truncated}
      assert Msgpack.decode(<<0xC1>>) == {:error, {:invalid_byte, 0xC1}}
      assert Msgpack.decode(<<0x91, 0xC1>>) == {:error, {:invalid_byte, 0xC1}}
      assert Msgpack.decode(<<0xC0, 0xC0, 0xC0>>) == {:error, {:trailing_bytes, 2}}
      assert Msgpack.decode(:not_binary) == {:error, :not_a_binary}
      assert Msgpack.decode(<<1::3>>) == {:error, :not_a_binary}
    end

    test "every header byte, alone, is :truncated or a complete value" do
      for byte <- 0..255 do
        result = Msgpack.decode(<<byte>>)

        cond do
          byte == 0xC1 ->
            assert result == {:error, {:invalid_byte, 0xC1}}

          byte in [0x80, 0x90, 0xA0, 0xC0, 0xC2, 0xC3] ->
            assert {:ok, _} = result

          byte < 0x80 or byte >= 0xE0 ->
            assert result == {:ok, byte - if(byte >= 0xE0, do: 256, else: 0)}

          true ->
            assert result == {:error, :truncated}, "byte 0x#{Integer.to_string(byte, 16)}"
        end
      end
    end

    test "the raising variants raise ArgumentError" do
      assert_raise ArgumentError, ~r/unsupported term/, fn -> Msgpack.encode!({1}) end
      assert_raise ArgumentError, ~r/outside/, fn -> Msgpack.encode!(1 <<< 64) end
      assert_raise ArgumentError, ~r/middle of a value/, fn -> Msgpack.decode!(<<0x92>>) end
      assert_raise ArgumentError, ~r/trailing/, fn -> Msgpack.decode!(<<1, 2>>) end
      assert Msgpack.decode!(<<0x91, 0x01>>) == [1]
    end

    test "decode_prefix returns the rest" do
      assert Msgpack.decode_prefix(<<0x91, 0x01, 0xFF, 0xC1>>) == {:ok, [1], <<0xFF, 0xC1>>}
      assert Msgpack.decode_prefix(<<0x92, 0x01>>) == {:error, :truncated}
      assert Msgpack.decode_prefix(nil) == {:error, :not_a_binary}
    end
  end

  describe "element limit" do
    @limit 1_048_576
    @sixteen_mb 16 * 1024 * 1024

    defp array_header(n) when n < 16, do: <<0x90 + n>>
    defp array_header(n) when n < 0x10000, do: <<0xDC, n::16>>
    defp array_header(n), do: <<0xDD, n::32>>

    defp empties(n), do: array_header(n) <> :binary.copy(<<0x90>>, n)

    # Decodes in a fresh process whose heap may not pass `mib`: the decoder
    # building millions of terms gets it killed instead of answering.
    defp decode_bounded(bin, mib) do
      task =
        Task.async(fn ->
          Process.flag(:max_heap_size, %{size: div(mib * 1024 * 1024, 8), kill: true})
          Msgpack.decode(bin)
        end)

      Process.unlink(task.pid)
      Process.flag(:trap_exit, true)

      case Task.yield(task, 60_000) || Task.shutdown(task) do
        {:ok, result} ->
          result

        {:exit, reason} ->
          flunk("the decoder was killed (heap over #{mib} MiB): #{inspect(reason)}")

        nil ->
          flunk("the decoder did not finish")
      end
    end

    test "16 MB of empty arrays is refused, with bounded memory" do
      for bin <- [
            # one array of 16M empty arrays
            empties(@sixteen_mb - 5),
            # 16 arrays of just under the limit each
            array_header(16) <> :binary.copy(empties(@limit - 1), 16),
            # nested so that no long array is ever complete
            :binary.copy(array_header(@limit) <> :binary.copy(<<0x90>>, @limit - 1), 15) <>
              <<0x90>>,
            # small maps, which count twice
            array_header(16) <>
              :binary.copy(
                array_header(div(@limit, 2)) <>
                  :binary.copy(<<0x81, 0xA0, 0xC0>>, div(@limit, 2)),
                10
              ) <> :binary.copy(<<0x90>>, 6)
          ] do
        assert byte_size(bin) > 15_000_000
        assert decode_bounded(bin, 100) == {:error, {:too_many_elements, @limit}}
      end
    end

    test "the limit is exact: all values inside arrays and maps count" do
      assert {:ok, list} = Msgpack.decode(empties(@limit))
      assert length(list) == @limit
      assert Msgpack.decode(empties(@limit + 1)) == {:error, {:too_many_elements, @limit}}

      nested = fn outer -> array_header(outer) <> :binary.copy(empties(1023), outer) end
      assert {:ok, _} = Msgpack.decode(nested.(1024))
      assert Msgpack.decode(nested.(1025)) == {:error, {:too_many_elements, @limit}}

      map = fn n -> enc(Map.new(1..n, &{&1, nil})) end
      assert {:ok, _} = Msgpack.decode(map.(div(@limit, 2)))
      assert Msgpack.decode(map.(div(@limit, 2) + 1)) == {:error, {:too_many_elements, @limit}}
    end

    test "max_elements: sets another limit; a frame's scalars and bins cost nothing" do
      assert Msgpack.decode(enc([1, 2, 3]), max_elements: 2) == {:error, {:too_many_elements, 2}}
      assert Msgpack.decode(enc([1, [2]]), max_elements: 3) == {:ok, [1, [2]]}

      assert Msgpack.decode_prefix(enc(%{"a" => 1}), max_elements: 1) ==
               {:error, {:too_many_elements, 1}}

      assert Msgpack.decode(enc({:bin, :binary.copy(<<0>>, 1_000_000)}), max_elements: 1) ==
               {:ok, {:bin, :binary.copy(<<0>>, 1_000_000)}}

      assert_raise ArgumentError, fn -> Msgpack.decode(<<0x90>>, max_elements: 0) end

      assert_raise ArgumentError, ~r/1 values/, fn ->
        Msgpack.decode!(<<0x92, 1, 2>>, max_elements: 1)
      end

      # the budget does not outlive a decode
      assert Process.get({Msgpack, :budget}) == nil
    end
  end
end
