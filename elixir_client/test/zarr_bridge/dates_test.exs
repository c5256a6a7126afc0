defmodule ZarrBridge.DatesTest do
  # datetime64/timedelta64 <-> DateTime, NaiveDateTime and {count, unit},
  # against arrays numpy and zarr-python wrote (and read back), through a
  # real sidecar.
  use ZarrBridge.Test.SidecarCase, async: true

  alias ZarrBridge.{Array, Dates, NDArray}
  alias ZarrBridge.Test.Python

  @moduletag timeout: 120_000

  defp tmp_dir do
    dir = Path.join(System.tmp_dir!(), "zb-dates-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    dir
  end

  # name => numpy dtype and the values numpy builds from strings or ints.
  @python_cases """
  cases = {
      's': ('M8[s]', ['2024-01-01T06:00:00', '1969-12-31T23:59:59', '1900-02-28T01:02:03', 'NaT']),
      'ms': ('M8[ms]', ['2024-02-29T12:00:00.123', '1960-01-01T00:00:00.001']),
      'us': ('M8[us]', ['2024-02-29T12:00:00.123456', '1969-12-31T23:59:59.999999', 'NaT']),
      'ns': ('M8[ns]', ['2024-01-01T00:00:00.123456000', '1970-01-01T00:00:00.000001', '1677-09-22T00:00:00', 'NaT']),
      'ps': ('M8[ps]', ['1970-03-01T10:00:00.000002', '1969-11-01T00:00:00']),
      'fs': ('M8[fs]', ['1970-01-01T02:00:00.5', '1969-12-31T23:00:00.000001']),
      'as': ('M8[as]', ['1970-01-01T00:00:01.000001', '1969-12-31T23:59:58']),
      'm': ('M8[m]', ['2030-05-05T05:05', '1800-01-01T00:00']),
      'h': ('M8[h]', ['2024-03-10T23', '1969-12-31T01']),
      'D': ('M8[D]', ['2024-03-01', '1969-12-31', '0001-01-01', 'NaT']),
      'W': ('M8[W]', [0, -1, 2800]),
      'M': ('M8[M]', ['2024-03', '1969-12', '1900-01', 'NaT']),
      'Y': ('M8[Y]', ['2024', '1969', '1000']),
      '10s': ('M8[10s]', [3, -7]),
      'ns_frac': ('M8[ns]', ['2024-01-01T00:00:00.123456789', '1969-12-31T23:59:59.999999999']),
      'td_ns': ('m8[ns]', [1500, -3, 'NaT']),
      'td_15m': ('m8[15m]', [2, -1]),
      'td_M': ('m8[M]', [14]),
  }
  """

  defp write_with_numpy!(dir, format) do
    (Python.prelude() <>
       @python_cases <>
       """
       out = {}
       for name, (dt, values) in cases.items():
           a = np.array(values, dtype=dt)
           z = zarr.create_array(os.path.join(sys.argv[1], name), shape=a.shape, chunks=(2,),
                                 dtype=a.dtype, zarr_format=int(sys.argv[2]))
           z[...] = a
           ints = a.view('i8').tolist()
           iso = None
           if dt.startswith('M8'):
               iso = [None if np.isnat(x) else str(x) for x in a.astype('M8[us]')]
           out[name] = {'ints': ints, 'iso': iso}
       print(json.dumps(out))
       """)
    |> Python.run!([dir, Integer.to_string(format)])
    |> ZarrBridge.Test.JSON.decode!()
  end

  defp expected_datetime(nil), do: nil

  defp expected_datetime(iso) do
    iso |> NaiveDateTime.from_iso8601!() |> DateTime.from_naive!("Etc/UTC")
  end

  defp us(nil), do: nil
  defp us(%DateTime{} = dt), do: {DateTime.to_unix(dt, :microsecond), dt.time_zone}

  for format <- [2, 3] do
    test "numpy datetimes in every unit read back as the right DateTimes (v#{format})" do
      sc = start_sidecar()
      dir = tmp_dir()
      cases = write_with_numpy!(dir, unquote(format))

      for {name, %{"ints" => ints, "iso" => iso}} <- cases, name != "ns_frac", iso != nil do
        a = ZarrBridge.open!(path: Path.join(dir, name), server: sc)
        assert {:datetime64, _} = a.metadata.dtype
        nd = Array.read!(a)
        assert NDArray.to_list(nd) == ints

        {:ok, got} = Dates.to_list(nd, dates: :datetime)
        assert Enum.map(got, &us/1) == Enum.map(iso, &(&1 |> expected_datetime() |> us())), name

        {:ok, naive} = Dates.to_list(nd, dates: :naive)
        assert naive == Enum.map(got, &(&1 && DateTime.to_naive(&1)))
      end
    end
  end

  test "DateTime precision follows the unit; :integer and timedeltas give {count, unit}" do
    sc = start_sidecar()
    dir = tmp_dir()
    write_with_numpy!(dir, 3)
    read = fn name -> Array.read!(ZarrBridge.open!(path: Path.join(dir, name), server: sc)) end

    assert {:ok, [~U[2024-01-01 06:00:00Z] | _]} = Dates.to_list(read.("s"))
    assert {:ok, [~U[2024-02-29 12:00:00.123Z] | _]} = Dates.to_list(read.("ms"))
    assert {:ok, [~U[2024-01-01 00:00:00.123456Z] | _]} = Dates.to_list(read.("ns"))

    assert {:ok, [~U[2024-03-01 00:00:00Z], ~U[1969-12-01 00:00:00Z], _, nil]} =
             Dates.to_list(read.("M"))

    assert {:ok, [{30, :s}, {-70, :s}]} = Dates.to_list(read.("10s"), dates: :integer)

    assert {:ok, [~U[1970-01-01 00:00:30Z], ~U[1969-12-31 23:58:50Z]]} =
             Dates.to_list(read.("10s"))

    assert {:ok, [{1500, :ns}, {-3, :ns}, nil]} = Dates.to_list(read.("td_ns"))
    assert {:ok, [{30, :m}, {-15, :m}]} = Dates.to_list(read.("td_15m"), dates: :datetime)
    assert {:ok, [{14, :M}]} = Dates.to_list(read.("td_M"))
  end

  test "nanoseconds Elixir cannot hold are refused unless truncation is asked for" do
    sc = start_sidecar()
    dir = tmp_dir()
    cases = write_with_numpy!(dir, 3)
    nd = Array.read!(ZarrBridge.open!(path: Path.join(dir, "ns_frac"), server: sc))

    assert {:error, %Error{code: :invalid_params, details: %{index: 0}} = e} = Dates.to_list(nd)
    assert e.message =~ "microseconds"
    assert_raise Error, fn -> Dates.to_list!(nd, dates: :naive) end

    # truncation rounds toward the past, exactly as numpy's astype('M8[us]')
    {:ok, got} = Dates.to_list(nd, precision: :truncate)

    assert Enum.map(got, &us/1) ==
             Enum.map(cases["ns_frac"]["iso"], &(&1 |> expected_datetime() |> us()))

    assert [~U[2024-01-01 00:00:00.123456Z], ~U[1969-12-31 23:59:59.999999Z]] = got

    # the {count, unit} form is always exact
    assert {:ok, [{1_704_067_200_123_456_789, :ns}, {-1, :ns}]} =
             Dates.to_list(nd, dates: :integer)
  end

  test "Elixir-written datetimes and timedeltas read back in numpy exactly" do
    sc = start_sidecar()
    dir = tmp_dir()

    plus2 = %DateTime{
      year: 2024,
      month: 1,
      day: 1,
      hour: 8,
      minute: 0,
      second: 0,
      microsecond: {250, 6},
      time_zone: "Etc/GMT-2",
      zone_abbr: "+02",
      utc_offset: 7200,
      std_offset: 0
    }

    writes = [
      {"ns", {:datetime64, :ns},
       [~U[2024-01-01 06:00:00.123456Z], ~N[1969-12-31 23:59:59.999999], nil, plus2, {5, :s}, 42]},
      {"s", {:datetime64, :s}, [~U[1900-02-28 01:02:03Z], ~N[2262-04-11 00:00:00], nil]},
      {"D", {:datetime64, :D}, [~U[2024-03-01 00:00:00Z], ~N[0001-01-01 00:00:00]]},
      {"M", {:datetime64, :M}, [~U[2024-03-01 00:00:00Z], ~N[1969-12-01 00:00:00], nil]},
      {"Y", {:datetime64, :Y}, [~N[1000-01-01 00:00:00], {36, :M}]},
      {"as", {:datetime64, :as}, [~U[1970-01-01 00:00:01.000001Z], ~U[1969-12-31 23:59:58Z]]},
      {"10s", {:datetime64, {10, :s}}, [~U[1970-01-01 00:00:30Z], {-70, :s}]},
      {"td_ms", {:timedelta64, :ms}, [{3, :s}, {-1, :ms}, nil, {2, :D}]},
      {"td_M", {:timedelta64, :M}, [{2, :Y}, {5, :M}]}
    ]

    for {name, dtype, values} <- writes do
      a =
        ZarrBridge.create!(
          path: Path.join(dir, name),
          server: sc,
          shape: {length(values)},
          dtype: dtype
        )

      :ok = Array.write(a, Dates.from_list!(values, {length(values)}, dtype))
    end

    got =
      (Python.prelude() <>
         """
         out = {}
         for name in sys.argv[2:]:
             a = zarr.open_array(os.path.join(sys.argv[1], name), mode='r')[...]
             out[name] = [a.dtype.str, [str(x) for x in a]]
         print(json.dumps(out))
         """)
      |> Python.run!([dir | Enum.map(writes, &elem(&1, 0))])
      |> ZarrBridge.Test.JSON.decode!()

    assert got["ns"] == [
             "<M8[ns]",
             [
               "2024-01-01T06:00:00.123456000",
               "1969-12-31T23:59:59.999999000",
               "NaT",
               "2024-01-01T06:00:00.000250000",
               "1970-01-01T00:00:05.000000000",
               "1970-01-01T00:00:00.000000042"
             ]
           ]

    assert got["s"] == ["<M8[s]", ["1900-02-28T01:02:03", "2262-04-11T00:00:00", "NaT"]]
    assert got["D"] == ["<M8[D]", ["2024-03-01", "0001-01-01"]]
    assert got["M"] == ["<M8[M]", ["2024-03", "1969-12", "NaT"]]
    assert got["Y"] == ["<M8[Y]", ["1000", "1973"]]

    assert got["as"] == [
             "<M8[as]",
             ["1970-01-01T00:00:01.000001000000000000", "1969-12-31T23:59:58.000000000000000000"]
           ]

    assert got["10s"] == ["<M8[10s]", ["1970-01-01T00:00:30", "1969-12-31T23:58:50"]]

    assert got["td_ms"] == [
             "<m8[ms]",
             ["3000 milliseconds", "-1 milliseconds", "NaT", "172800000 milliseconds"]
           ]

    assert got["td_M"] == ["<m8[M]", ["24 months", "5 months"]]
  end

  test "lossy or impossible writes are refused by element, unless truncation is asked for" do
    dt = {:datetime64, :s}

    assert {:error, %Error{code: :invalid_params, details: %{index: 1}}} =
             Dates.from_list([~U[2024-01-01 00:00:00Z], ~U[2024-01-01 00:00:00.5Z]], {2}, dt)

    assert {:ok, nd} =
             Dates.from_list([~U[2024-01-01 00:00:00.5Z], ~U[1969-12-31 23:59:59.5Z]], {2}, dt,
               precision: :truncate
             )

    assert NDArray.to_list(nd) == [1_704_067_200, -1]

    assert {:error, %Error{details: %{index: 0}}} =
             Dates.from_list([~U[2024-03-02 00:00:00Z]], {1}, {:datetime64, :M})

    assert {:ok, nd} =
             Dates.from_list([~U[2024-03-02 00:00:00Z]], {1}, {:datetime64, :M},
               precision: :truncate
             )

    assert NDArray.to_list(nd) == [(2024 - 1970) * 12 + 2]

    assert {:error, %Error{message: msg}} = Dates.from_list([{1, :M}], {1}, {:timedelta64, :D})
    assert msg =~ "no fixed length"
    assert {:error, %Error{}} = Dates.from_list([{1, :ms}], {1}, {:timedelta64, :s})

    assert {:error, %Error{}} =
             Dates.from_list([~U[2024-01-01 00:00:00Z]], {1}, {:timedelta64, :s})

    assert {:error, %Error{}} = Dates.from_list([{7, :s}], {1}, {:datetime64, {10, :s}})
    assert {:error, %Error{}} = Dates.from_list(["2024"], {1}, dt)
    # beyond int64 nanoseconds: refused by the int64 range check
    assert {:error, %Error{}} =
             Dates.from_list([~U[9999-01-01 00:00:00Z]], {1}, {:datetime64, :as})

    # a year Elixir cannot hold
    {:ok, far} = NDArray.from_list([20_000], {1}, {:datetime64, :Y})
    assert {:error, %Error{message: msg}} = Dates.to_list(far)
    assert msg =~ "years"
    assert {:ok, [{20_000, :Y}]} = Dates.to_list(far, dates: :integer)

    assert {:ok, {90, :m}} =
             Dates.convert({1, :h}, :m) |> then(fn {:ok, {n, _}} -> {:ok, {n + 30, :m}} end)

    assert {:ok, {3_600_000, :ms}} = Dates.convert({1, :h}, :ms)
    assert {:error, _} = Dates.convert({1, :ms}, :s)
    assert {:ok, {0, :s}} = Dates.convert({1, :ms}, :s, precision: :truncate)
    assert {:ok, ~U[2024-03-01 00:00:00Z]} = Dates.to_datetime((2024 - 1970) * 12 + 2, :M)
    assert {:ok, nil} = Dates.to_naive(Dates.nat(), :ns)

    assert {:ok, 19_783} =
             Dates.from_datetime(~D[2024-03-01] |> NaiveDateTime.new!(~T[00:00:00]), :D)
  end
end
