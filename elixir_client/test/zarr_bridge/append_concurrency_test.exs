defmodule ZarrBridge.AppendConcurrencyTest do
  # Many Elixir processes appending to one array through one real sidecar at
  # once (the scenarios of the issue): every append is acknowledged, the
  # array ends with exactly the rows appended, and each append's reported
  # region holds that append's values and nothing else does.
  use ExUnit.Case, async: true

  alias ZarrBridge.{Array, NDArray}

  @moduletag timeout: 300_000

  @fill -1
  @width 10

  setup do
    dir = Path.join(System.tmp_dir!(), "zb-append-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    {:ok, dir: dir}
  end

  defp create(dir, shape, chunks) do
    ZarrBridge.create!(
      path: Path.join(dir, "a"),
      shape: shape,
      chunks: chunks,
      dtype: :int32,
      fill_value: @fill
    )
  end

  defp rows(value, n), do: NDArray.new!(block(value, n * @width), {n, @width}, :int32)

  defp block(value, count), do: :binary.copy(<<value::little-signed-32>>, count)

  # Runs every fun at once, each in its own process; their results in order.
  defp all_at_once(funs) do
    funs
    |> Enum.map(&Task.async/1)
    |> Task.await_many(240_000)
  end

  # Each {value, {:ok, %{start:, stop:}}} region holds `value` only; the
  # regions are disjoint and tile [first, last) along axis 0.
  defp assert_regions(array, results, first) do
    spans =
      for {value, {:ok, %{start: start, stop: stop, array: after_append}}} <- results do
        {a, 0} = start
        {b, @width} = stop
        assert elem(after_append.metadata.shape, 0) >= b
        {:ok, got} = Array.read(array, start: start, stop: stop)
        assert got.data == block(value, (b - a) * @width), "append #{value} at #{a}..#{b}"
        {a, b}
      end
      |> Enum.sort()

    assert length(spans) == length(results)
    assert [{^first, _} | _] = spans

    spans
    |> Enum.chunk_every(2, 1, :discard)
    |> Enum.each(fn [{_, b}, {a, _}] -> assert a == b, "a gap or overlap at #{b}..#{a}" end)

    spans |> List.last() |> elem(1)
  end

  test "8 processes x 25 appends of 40 rows: all :ok, 8000 rows, each region its own", %{
    dir: dir
  } do
    array = create(dir, {0, @width}, {64, 5})

    results =
      for p <- 1..8 do
        fn ->
          for k <- 1..25 do
            value = p * 1000 + k
            {value, Array.append_region(array, rows(value, 40))}
          end
        end
      end
      |> all_at_once()
      |> Enum.concat()

    assert Enum.all?(results, &match?({_, {:ok, _}}, &1)),
           inspect(Enum.reject(results, &match?({_, {:ok, _}}, &1)) |> Enum.take(3))

    {:ok, array} = Array.refresh(array)
    assert array.metadata.shape == {8000, @width}
    assert assert_regions(array, results, 0) == 8000
    # values are small and positive: the fill value's bytes cannot straddle two
    assert :binary.match(Array.read!(array).data, block(@fill, 1)) == :nomatch
  end

  test "100 concurrent one-element appends: every element kept once", %{dir: dir} do
    array = create(dir, {0}, {16})

    results =
      for value <- 1..100 do
        fn ->
          {value, Array.append_region(array, NDArray.from_list!([value], {1}, :int32))}
        end
      end
      |> all_at_once()

    for {value, result} <- results do
      assert {:ok, %{start: {a}, stop: {b}}} = result, "append #{value}: #{inspect(result)}"
      assert b == a + 1
      assert Array.read!(array, start: {a}, stop: {b}) |> NDArray.to_list() == [value]
    end

    {:ok, array} = Array.refresh(array)
    assert array.metadata.shape == {100}
    assert Array.read!(array) |> NDArray.to_list() |> Enum.sort() == Enum.to_list(1..100)
  end

  test "appends racing a resize: the resize falls between two appends", %{dir: dir} do
    array = create(dir, {0, @width}, {16, 5})
    big = 2000

    appenders =
      for p <- 1..4 do
        fn ->
          for k <- 1..20 do
            value = p * 100 + k
            {value, Array.append_region(array, rows(value, 5))}
          end
        end
      end

    resizer = fn ->
      Process.sleep(5)
      [{:resize, Array.resize(array, {big, @width})}]
    end

    {[[{:resize, resized}]], appended} = [resizer | appenders] |> all_at_once() |> Enum.split(1)

    assert {:ok, %Array{metadata: %{shape: {^big, @width}}}} = resized
    results = Enum.concat(appended)
    assert Enum.all?(results, &match?({_, {:ok, _}}, &1)), inspect(Enum.take(results, 3))

    {before, after_resize} =
      Enum.split_with(results, fn {_, {:ok, %{stop: {b, _}}}} -> b <= big end)

    end_before = if before == [], do: 0, else: assert_regions(array, before, 0)
    total = if after_resize == [], do: big, else: assert_regions(array, after_resize, big)

    {:ok, array} = Array.refresh(array)
    assert array.metadata.shape == {total, @width}
    # the rows the resize added read as the fill value, and only those
    gap = Array.read!(array, start: {end_before, 0}, stop: {big, @width})
    assert gap.data == block(@fill, (big - end_before) * @width)
  end
end
